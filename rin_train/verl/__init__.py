"""The verl engine: srdd's settings carried into a distributed verl GRPO run.

verl runs the training in its own processes, so this package owns what crosses
that boundary: the run's settings file (settings), the verl command line and its
Hydra overrides (command), the parquet data (data), the plugin verl imports in its
actor and vLLM workers (plugin, hooks), the reward function it loads by path
(reward), launching and following the job (launch, engine), and turning its logs
into a srdd run directory (ingest, ingest_cli: `srdd ingest`).

Importing this package does not import verl; the library is an optional extra.
"""
