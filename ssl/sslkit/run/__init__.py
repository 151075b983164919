"""The plumbing of a run, around the training and the evaluation it does.

- :mod:`~sslkit.run.jobs`: one Hydra job of either entry point, its outcome and its objective;
- :mod:`~sslkit.run.resume`: checkpoints written atomically, the config hash, exact resume;
- :mod:`~sslkit.run.failures`: ``failed.json`` of a failed job, the summary of a sweep;
- :mod:`~sslkit.run.results`: the ``results.json`` document and the printed table;
- :mod:`~sslkit.run.loggers`: CSV and W&B loggers (online, offline, never blocking a run);
- :mod:`~sslkit.run.files`: files written whole or not at all;
- :mod:`~sslkit.run.host`: settings of the machine a run is on (threads, memory, bf16).
"""
