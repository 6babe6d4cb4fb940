"""rin_train: quantized RL (GRPO) with scan-guided noise injection, trustworthy run directories.

The core is engine-neutral, so that both engines quantize, perturb, evaluate and
record a run the same way:

    run_config, presets     the validated run config (`srdd train CONFIG --set k=v`)
    noise, schedule,        what noise each layer gets at each step, and what the
    effective               quantized GEMM really sees of it
    evaluate, lora_merge,   accuracy at a stated precision (LoRA separate or merged), and
    outcomes                each problem's outcome behind it (eval_outcomes.jsonl)
    tasks, rewards          prompts, answers and the strict '#### n' reward
    rundir, watchdog,       the run directory (run.json, metrics.jsonl, scans), stalls,
    signals, train          signals, and the training loop around an engine

Each engine is a subpackage: `rin_train.trl` (single machine) and `rin_train.verl`
(distributed, run by verl itself). `rin_train.study` runs a suite × seeds on the
TRL engine.
"""
