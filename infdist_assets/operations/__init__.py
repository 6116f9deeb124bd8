"""Running the graph: schedules and sensors (``automation``), the Kubernetes executor's settings
(``deployment``) and the embedded default end to end (``demo``)."""
