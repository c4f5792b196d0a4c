"""Presentation rendering: slides + narration → narrated MP4, subtitles, thumbnail, manifest.

One module per step: ``deck`` (input and validation), ``slides`` (normalize),
``tts`` (engines), ``audio`` and ``timeline`` (narration and timing),
``encode`` and ``process`` (ffmpeg), ``subtitles``, ``cache``, ``job`` (the
``render`` job type), ``inputs`` (checking and storing a render's files), ``routes`` (``POST
/v1/renders``), ``cli`` (``dojo render``) and ``sample``. Importing
``pipelines.render.job`` registers the job type; the API and the ``dojo``
command find the rest through the names below (``actors.jobs.extensions``).
"""

ROUTES = "pipelines.render.routes:router"
CLI = "pipelines.render.cli:add_commands"
