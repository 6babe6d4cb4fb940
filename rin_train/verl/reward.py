"""verl's custom reward function (`reward.custom_reward_function.path` = this file, `.name` = compute_score).

It scores exactly like the TRL engine (rin_train.rewards): the training reward
is the strict '#### n' answer, with `format_score` for a well-formed wrong one;
validation accuracy is strict and never gets format credit. verl's reward
manager turns a returned dict into "reward_extra_info": the "acc" key becomes
the validation accuracy `val-core/<data_source>/acc/mean@1`, "acc_flexible"
`val-aux/<data_source>/acc_flexible/mean@1`.

verl loads this file by path in its reward workers (verl.utils.import_utils.
load_extern_object), so it imports only rin_train.rewards.
"""

from __future__ import annotations

from rin_train.rewards import flexible_reward, strict_reward, training_reward


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None,
                  format_score: float = 0.0, **_verl_extras) -> dict:
    """verl's signature; `format_score` comes from reward.custom_reward_function.reward_kwargs.

    `**_verl_extras` takes what verl's reward managers may add (e.g. the reward
    router address of a reward-model setup), which this rule-based score ignores.
    """
    return {"score": training_reward(solution_str, ground_truth, format_score),
            "acc": strict_reward(solution_str, ground_truth),
            "acc_flexible": flexible_reward(solution_str, ground_truth)}
