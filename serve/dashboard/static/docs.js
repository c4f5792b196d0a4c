// The API's Swagger UI, from assets dojo serves itself (no CDN sees the page). The spec comes with the
// dashboard session; "Authorize" takes a token for the requests "Try it out" sends.
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/dashboard/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
