"""A GRPO step's update passes run side by side, with the bits they have one after another.

Why: with shared prompts (rin_train.trl.shared_prompt) an update pass is a forward and backward of
few rows, run on one thread (srdd.threads.small_gemm_threads), so the machine's other cores idle
through the update, about a third of a demo run. TRL buffers all of a step's passes at its first
one (`GRPOTrainer._buffered_inputs`), so the inputs of pass k+1 exist while pass k runs. Here pass
k runs as TRL runs it, while the next passes of the same optimizer step compute their losses and
gradients in worker threads, one intra-op thread each, with `torch.autograd.grad`: nothing is
written to `.grad`. When the Trainer reaches such a pass, its loss is the one computed, and its
backward hands autograd the stored gradients (`_Replay`), which AccumulateGrad adds into `.grad`
as the pass's own backward would: the same additions in the same order, so the optimizer step sees
the same bits. tests/rin_train/trl/test_parallel_passes.py compares whole runs both ways.

Two things are reproduced rather than shared, and both are checked:
- the gradient that reaches a pass's loss is what the Trainer's and accelerate's divisions of the
  loss make of backward's 1.0 (`Trainer.training_step`, `Accelerator.backward`); the replayed
  backward compares it with what actually arrives and raises on a difference;
- TRL's per-pass metrics (entropy, clip ratios) are appended in pass order: a worker waits after
  its forward, before its loss, until the pass before it has its loss.

Only the plain single-process case runs ahead (no DeepSpeed, GPUs, gradient scaler, LOMO or
router losses, and one generation per optimizer step); anything else runs one pass at a time.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import torch

from srdd.memory import release_free_memory

_worker = threading.local()
"""In a worker thread, `after`: the event set when the previous pass has computed its loss."""


@dataclass(frozen=True)
class PassAhead:
    """A pass computed ahead: its loss as compute_loss returns it, and its gradients of what backward sees."""

    loss: torch.Tensor
    grads: tuple[torch.Tensor | None, ...]
    grad_at_loss: torch.Tensor


class _Replay(torch.autograd.Function):
    """The loss of a pass computed ahead; its backward gives autograd the pass's stored gradients."""

    @staticmethod
    def forward(ctx, loss: torch.Tensor, ahead: PassAhead, *params: torch.Tensor) -> torch.Tensor:
        ctx.ahead = ahead
        return loss.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ahead: PassAhead = ctx.ahead
        if not torch.equal(grad, ahead.grad_at_loss):
            raise RuntimeError(
                f"parallel update passes: the Trainer scaled a pass's loss by {grad.item()!r}, its gradients were "
                f"computed for {ahead.grad_at_loss.item()!r} (transformers or accelerate changed how it scales the "
                "loss); run with SRDD_PASS_WORKERS=1")
        return (None, None, *ahead.grads)


def wait_for_previous_pass() -> None:
    """Called by the log-prob forward: in a worker, block until the pass before has its loss (metric order)."""
    after = getattr(_worker, "after", None)
    if after is not None:
        after.wait()


class ParallelPasses:
    """Runs the passes after each group leader ahead, and replays them when the Trainer reaches them."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.ahead: dict[int, Future[PassAhead]] = {}
        self.leader_done: threading.Event | None = None

    def supported(self) -> bool:
        """Whether the Trainer's update is the plain one whose scaling grad_at_loss reproduces."""
        from accelerate.utils import DistributedType

        t = self.trainer
        return (t.accelerator.distributed_type == DistributedType.NO and t.args.n_gpu <= 1
                and t.accelerator.scaler is None and "lomo" not in str(t.args.optim).lower()
                and not t.aux_loss_enabled and t.args.steps_per_generation == t.args.gradient_accumulation_steps
                and t.model.training)

    def replay(self, index: int, params: list[torch.Tensor]) -> torch.Tensor | None:
        """Pass `index`'s loss if it was computed ahead (its backward then adds its gradients), else None."""
        future = self.ahead.pop(index, None)
        if future is None:
            return None
        ahead = future.result()
        return _Replay.apply(ahead.loss, ahead, *params)

    def launch(self, model, index: int, workers: int, params: list[torch.Tensor], num_items_in_batch) -> None:
        """At a group's first pass (`index`, TRL's _step), start the group's other passes in worker threads
        (`num_items_in_batch`: the Trainer's, one for every pass of an optimizer step)."""
        t = self.trainer
        passes = t.args.gradient_accumulation_steps
        position = index % passes
        count = min(workers, passes - position) - 1
        if workers < 2 or position % workers or count < 1 or not self.supported():
            return
        previous = self.leader_done = threading.Event()
        pool = ThreadPoolExecutor(count)
        for offset in range(1, count + 1):
            done = threading.Event()
            inputs = t._buffered_inputs[position + offset]
            self.ahead[index + offset] = pool.submit(self._compute, model, inputs, params, num_items_in_batch,
                                                     previous, done)
            previous = done
        pool.shutdown(wait=False)

    def leader_finished(self) -> None:
        """The group leader has its loss (or failed): the first worker may compute its own."""
        if self.leader_done is not None:
            self.leader_done.set()
            self.leader_done = None

    def _compute(self, model, inputs: dict, params: list[torch.Tensor], num_items_in_batch,
                 after: threading.Event, done: threading.Event) -> PassAhead:
        from trl import GRPOTrainer

        _worker.after = after
        try:
            loss = GRPOTrainer.compute_loss(self.trainer, model, inputs, num_items_in_batch=num_items_in_batch)
        finally:
            _worker.after = None
            done.set()
        at_loss = self.grad_at_loss(loss, num_items_in_batch)
        release_free_memory()  # as the leader does after its forward and its pass (NoisyGRPOTrainer.compute_loss)
        grads = torch.autograd.grad(loss, params, grad_outputs=at_loss, allow_unused=True)
        release_free_memory()
        return PassAhead(loss.detach(), grads, at_loss)

    def grad_at_loss(self, loss: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        """The gradient that backward's 1.0 becomes at compute_loss's output, through the divisions that
        Trainer.training_step (unless the loss is already scaled for accumulation) and Accelerator.backward
        apply to it: each division's backward divides the incoming gradient, the last division first."""
        t = self.trainer
        scaled = t.loss_is_scaled_for_ga
        if scaled is None:
            scaled = ((t.model_accepts_loss_kwargs and num_items_in_batch is not None)
                      or t.compute_loss_func is not None)
        grad = torch.ones_like(loss) / t.accelerator.gradient_accumulation_steps
        return grad if scaled else grad / t.current_gradient_accumulation_steps

    def settle(self, failed: bool) -> None:
        """Wait for the passes running ahead, before the leader's one-thread setting is undone: a worker's GEMMs
        must keep the thread count its pass has one after another. After a failed pass, drop them."""
        wait(list(self.ahead.values()))
        if failed:
            self.ahead.clear()
