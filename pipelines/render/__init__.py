"""Presentation rendering: slides + narration → narrated MP4, subtitles, thumbnail, manifest.

One module per step: ``deck`` (input and validation), ``slides`` (normalize),
``tts`` (engines), ``audio`` and ``timeline`` (narration and timing),
``encode`` and ``process`` (ffmpeg), ``subtitles``, ``cache``, ``job`` (the
``render`` job type), ``routes`` (``POST /v1/renders``) and ``sample``.
Importing ``pipelines.render.job`` registers the job type.
"""
