"""Studies: every arm of a calibrate suite × every seed, run one after another and resumably.

runner plans and runs them (`srdd study run`), status reads the runs directory
(`srdd study status`), cli wires both and the final report (`srdd study report`).
"""
