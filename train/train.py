"""Train Animate Anyone 2 (paper §3, §4.1) with accelerate.

    accelerate launch -m train.train --config train/recipes/paper.yaml --stage image --data DATA --out RUN
    python -m train.train --config RECIPE.yaml --data DATA --out RUN --resume       # one process

accelerate does everything distributed (DDP on one or many machines, DeepSpeed and FSDP from its own
config) and mixed precision; this file is the loop. Each process reads its own slice of one seeded
stream of clips (`ClipStream`), so the data position is a single number — the samples consumed — and a
resumed run, on any number of processes, continues the stream where it stopped. Every random draw of a
step comes from a generator seeded by (seed, step, micro-step, rank): resuming gives the losses of an
uninterrupted run — bit for bit on one CPU thread, within the kernels' run-to-run rounding elsewhere
(train/README.md, "Train", states the measured bounds).

A loss (or, outside fp16, a gradient norm) that is not finite stops the run before the optimizer
step, so the weights never take it and no checkpoint is written from them; the last good checkpoint
stays as it was. At the end the weights are exported as the pack's checkpoint `RUN/aa2-final.safetensors`,
which `LoadAA2Model` reads.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from aa2.errors import AA2Error, AA2InputError
from aa2.models.aa2_model import AA2Model
from aa2.pipeline.assemble import dropped_text
from aa2.pipeline.inputs import SamplingSettings
from aa2.weights.checkpoint import save_checkpoint
from aa2.weights.sources import ModelSources, load_model

from . import checkpoints as ckpt
from .batch import build_batch, load_backgrounds
from .config import StageSettings, TrainConfig, load_recipe
from .denoising_step import DenoisingStep
from .objective import DiffusionObjective, training_schedule

FINAL = "aa2-final.safetensors"


class NonFiniteLoss(AA2Error):
    """The loss or the gradients stopped being finite numbers."""


# ------------------------------------------------------------------------------------------ pieces


def select_trainable(model: AA2Model, stage: StageSettings) -> dict[str, nn.Parameter]:
    """Freeze everything, then unfreeze what the stage's globs select; name -> parameter, model order."""
    model.requires_grad_(False)
    chosen = {name: p for name, p in model.named_parameters() if stage.selects(name)}
    if not chosen:
        raise AA2InputError(
            f"stage {stage.name!r} selects no parameters (trainable {list(stage.trainable_patterns)}, frozen "
            f"{list(stage.frozen_patterns)}); names look like 'denoising_net.unet.up_blocks.1.attentions.0...'"
        )
    for parameter in chosen.values():
        parameter.requires_grad_(True)
    return chosen


def load_start_model(config: TrainConfig) -> AA2Model:
    m = config.model
    sources = ModelSources(
        base=Path(m.base),
        motion_module=Path(m.motion_module) if m.motion_module else None,
        image_encoder=Path(m.image_encoder) if m.image_encoder else None,
        vae=Path(m.vae) if m.vae else None,
        fusion=m.fusion,
        new_parts=True,  # from Moore-AnimateAnyone weights: the object guider and depth branch start fresh
    )
    model = load_model(sources)
    model.config = model.config.replace(scheduler=training_schedule(model.config.scheduler, config.loss))
    return model


def make_optimizer(parameters: Sequence[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    o = config.optim
    kwargs = dict(lr=o.learning_rate, betas=(o.adam_beta1, o.adam_beta2), weight_decay=o.adam_weight_decay,
                  eps=o.adam_epsilon)
    if o.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as error:
            raise AA2InputError(
                "optim.use_8bit_adam needs bitsandbytes (pip install bitsandbytes, CUDA only); or set "
                f"optim.use_8bit_adam=false ({error})"
            ) from error
        return bnb.optim.AdamW8bit(parameters, **kwargs)
    return torch.optim.AdamW(parameters, **kwargs)


def make_ema(trainable: dict[str, nn.Parameter], decay: float | None):
    """An exponential moving average of the trained weights (optim.ema_decay), or None when it is off."""
    if decay is None:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(list(trainable.values()), decay=decay)


def peak_memory_gib(device: torch.device) -> float | None:
    """The most memory tensors have held on a CUDA device so far, in GiB; None elsewhere."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def chosen_checkpoint(run_dir: Path, choice: str | Path) -> Path:
    """`--resume CHECKPOINT`: a checkpoint folder, by path or by its name under RUN/checkpoints."""
    for candidate in (Path(choice), run_dir / ckpt.CHECKPOINTS / str(choice)):
        if (candidate / "state.json").is_file():
            return candidate
    names = sorted(p.name for p in (run_dir / ckpt.CHECKPOINTS).glob("step-*")) if run_dir.is_dir() else []
    raise AA2InputError(f"--resume {choice}: no checkpoint there (a folder holding state.json); this run has "
                        f"{', '.join(names) or 'none'}")


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """One seed per (step, micro-step, rank): a step's draws do not depend on what ran before it."""
    return (seed * 1_000_003 + step * 7_919 + micro * 104_729 + rank * 15_485_863) % (2**63 - 1)


class ClipStream:
    """Batches of dataset indices: one seeded permutation per pass, read as an endless stream.

    The stream position `p` maps to `permutation(pass = p // n)[p % n]`. A global batch of
    `batch * world` consecutive positions is cut into one slice per rank. `start` is the number of
    samples consumed before (the data position stored in checkpoints).
    """

    def __init__(self, indices: Sequence[int], batch: int, world: int, rank: int, seed: int, start: int,
                 batches: int) -> None:
        self.indices, self.batch, self.world, self.rank = list(indices), batch, world, rank
        self.seed, self.start, self.batches = seed, start, batches
        self._perm: tuple[int, list[int]] | None = None

    def position(self, p: int) -> int:
        n = len(self.indices)
        epoch = p // n
        if self._perm is None or self._perm[0] != epoch:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 9_973 + epoch)).tolist()
            self._perm = (epoch, order)
        return self.indices[self._perm[1][p % n]]

    def __iter__(self) -> Iterator[list[int]]:
        for k in range(self.batches):
            first = self.start + k * self.batch * self.world + self.rank * self.batch
            yield [self.position(first + i) for i in range(self.batch)]

    def __len__(self) -> int:
        return self.batches


def keep_list(samples: list[dict]) -> list[dict]:
    """Samples stay separate: every clip is augmented on its own."""
    return samples


def open_dataset(data: str, config: TrainConfig, factory: str | None = None):
    """`train.dataset.PreparedClips` over `data`, or `factory` ("module:callable") with the same arguments."""
    if factory:
        module, _, name = factory.partition(":")
        cls = getattr(importlib.import_module(module), name)
    else:
        try:
            from .dataset import PreparedClips as cls
        except ImportError as error:
            raise AA2Error(f"train.dataset is not available ({error}); prepare data with python -m train.prepare") from error
    d = config.data
    return cls(data, clip_length=d.clip_length, size=tuple(d.size), stride=d.stride, seed=config.optim.seed,
               clips_per_video=d.clips_per_video)


def tracker_choice(config: TrainConfig) -> str | None:
    """The accelerate tracker `run.tracker` names, or None (with a note) when its package is missing."""
    name = config.run.tracker
    if name == "none":
        return None
    try:
        importlib.import_module(name)
    except ImportError:
        extra = " or the pack's [train] extra" if name == "tensorboard" else ""
        print(f"note: {name} is not installed (pip install {name}{extra}); logging only to RUN_DIR/metrics.jsonl",
              file=sys.stderr)
        return None
    return name


def engine_note(engine: str, environ: Mapping[str, str]) -> str | None:
    """A note when `accelerate launch` asked for a sharding engine that this run does not use:
    accelerate shards (FSDP, DeepSpeed) only on GPUs, and on a machine without CUDA it quietly runs
    the processes as plain data parallel (measured with accelerate 1.16: MULTI_CPU)."""
    for variable, wanted in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")):
        if environ.get(variable, "").lower() == "true" and engine != wanted:
            return (f"note: launched with a {wanted} config, but this run is {engine} (accelerate shards only on "
                    "GPUs): weights and optimizer state are whole on every process, and checkpoints are unsharded")
    return None


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def checksum(parameters: dict[str, nn.Parameter]) -> float:
    """A number that changes with any trainable weight (for checking that DDP ranks agree)."""
    total = torch.zeros((), dtype=torch.float64)
    for i, p in enumerate(parameters.values()):
        total += (p.detach().double().cpu() * (1 + (i % 7))).sum()
    return float(total)


# ------------------------------------------------------------------------------------------ run


def train(config: TrainConfig, data: str, out: str | Path, *, resume: bool | str | Path = False,
          dataset_factory: str | None = None) -> Path | None:
    """Run (or resume) training; returns the exported checkpoint (None when stopped early, and on other ranks).

    `resume`: True continues from the run's latest checkpoint; a path (or a checkpoint folder's name
    under RUN/checkpoints) continues from that one, and the steps after it are trained again.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import DistributedType
    from diffusers.optimization import get_scheduler
    from torch.utils.data import DataLoader

    config.validate()
    run_dir = Path(out)
    existing = ckpt.latest_checkpoint(run_dir) if (run_dir / ckpt.CHECKPOINTS).exists() else None
    if isinstance(resume, (str, Path)):
        existing = chosen_checkpoint(run_dir, resume)
    if existing is not None and not resume:
        raise AA2InputError(f"{run_dir} already holds a run (checkpoint {existing.name}): pass --resume to continue "
                            "it, or choose a new --out")
    o = config.optim
    # Without CUDA, accelerate starts a process group only when told the processes are CPU ones (gloo).
    cpu_ranks = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=cpu_ranks,
        mixed_precision=o.mixed_precision,
        gradient_accumulation_steps=o.gradient_accumulation_steps,
        log_with=tracker_choice(config),
        project_dir=str(run_dir),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=config.run.find_unused_parameters)],
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    launched_with = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched_with and launched_with != o.mixed_precision:
        accelerator.print(f"note: mixed precision is {o.mixed_precision} (the recipe's optim.mixed_precision); "
                          f"accelerate launch asked for {launched_with}: --set optim.mixed_precision={launched_with} "
                          "to use that instead")
    sharded = accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    note = engine_note(accelerator.distributed_type.name, os.environ)
    if note:
        accelerator.print(note)
    if sharded and o.ema_decay is not None:
        raise AA2InputError("optim.ema_decay averages whole weights and DeepSpeed/FSDP shard them: set "
                            "optim.ema_decay=null for a sharded run")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())

    model = load_start_model(config)
    trainable = select_trainable(model, config.stage)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(o.mixed_precision, torch.float32)
    model.to(accelerator.device)
    for part in (model.vae, model.image_encoder, model.reference_net):
        if weight_dtype != torch.float32 and not any(p.requires_grad for p in part.parameters()):  # wholly frozen: half the memory in bf16/fp16
            part.to(dtype=weight_dtype)
    if o.gradient_checkpointing:
        model.denoising_net.unet.enable_gradient_checkpointing()
        model.reference_net.enable_gradient_checkpointing()
    model.denoising_net.train()
    model.reference_net.train()

    optimizer = make_optimizer(list(trainable.values()), config)
    ema = make_ema(trainable, o.ema_decay)
    lr_scheduler = get_scheduler(o.lr_scheduler, optimizer, num_warmup_steps=o.lr_warmup_steps,
                                 num_training_steps=o.steps)
    step_module, optimizer = accelerator.prepare(DenoisingStep(model), optimizer)
    objective = DiffusionObjective(model.config.scheduler, config.loss)

    step, samples_seen = 0, 0
    if resume and existing is not None:
        step, samples_seen = _restore(existing, accelerator, trainable, optimizer, lr_scheduler, sharded, ema)
        accelerator.print(f"resumed from {existing} at step {step}")
    if accelerator.is_main_process:
        _truncate_log(run_dir / "metrics.jsonl", step)
    if config.debug.checksums:
        _truncate_log(run_dir / f"checksums-rank{rank}.jsonl", step)

    dataset = open_dataset(data, config, dataset_factory)
    held = 1 if config.run.validate_every and len(dataset) > 1 else 0  # the last clip is never trained on
    per_step = o.batch_size * world * o.gradient_accumulation_steps
    stream = ClipStream(range(len(dataset) - held), o.batch_size, world, rank, o.seed,
                        samples_seen, (o.steps - step) * o.gradient_accumulation_steps)
    loader = DataLoader(dataset, batch_sampler=stream, collate_fn=keep_list, num_workers=config.data.num_workers)
    backgrounds = load_backgrounds(config.data.backgrounds)
    if accelerator.log_with:  # what was asked for; `accelerator.trackers` stays empty until this call
        accelerator.init_trackers("aa2", config=_flat(config.to_dict()))

    batches = iter(loader)
    dropped: set[str] = set()  # annotations the model has no part for, said once each
    unwrapped: DenoisingStep = accelerator.unwrap_model(step_module)
    run_started, first_step = time.perf_counter(), step
    accelerator.print(f"training {config.stage.name} stage: {sum(p.numel() for p in trainable.values()) / 1e6:.1f}M "
                      f"trainable parameters, {len(dataset) - held} clips, steps {step + 1}..{o.steps}", flush=True)
    accelerator.print(f"  {world} process(es) ({accelerator.distributed_type.name}) on {accelerator.device} x batch {o.batch_size} x accumulation "
                      f"{o.gradient_accumulation_steps} = {per_step} clips per step of {config.data.clip_length} frames "
                      f"at {config.data.size[1]}x{config.data.size[0]}; {o.mixed_precision} mixed precision, gradient "
                      f"checkpointing {'on' if o.gradient_checkpointing else 'off'}"
                      + (f", EMA {o.ema_decay}" if ema is not None else "")
                      + (f"; {peak_memory_gib(accelerator.device):.1f} GiB on the device before the first step"
                         if accelerator.device.type == "cuda" else ""), flush=True)
    try:
        while step < o.steps:
            started = time.perf_counter()
            losses, grad_norm = [], None
            waited = 0.0
            for micro in range(o.gradient_accumulation_steps):
                generator = torch.Generator().manual_seed(step_seed(o.seed, step, micro, rank))
                asked = time.perf_counter()
                samples = next(batches)
                waited += time.perf_counter() - asked
                with accelerator.accumulate(step_module):
                    inputs = build_batch(model, samples, config.data, generator,
                                         single_frame=config.stage.single_target_frame, backgrounds=backgrounds,
                                         device=accelerator.device)
                    if set(inputs.dropped) - dropped:
                        dropped |= set(inputs.dropped)
                        accelerator.print(f"note: {dropped_text(inputs.dropped)}: the clips' annotation is not "
                                          "used (this model was built without that part)", flush=True)
                    use_reference = float(torch.rand((), generator=generator)) >= config.loss.drop_reference
                    noisy, timesteps, target, weights = objective.draw(inputs.latents, generator)
                    try:
                        prediction = step_module(noisy, timesteps, inputs.as_dict(), use_reference=use_reference)
                        loss = objective.loss(prediction, target, weights)
                        if config.debug.nan_at_step == step + 1:
                            loss = loss * float("nan")
                        gathered = accelerator.gather(loss.detach().float().reshape(1))
                        if not bool(torch.isfinite(gathered).all()):
                            raise NonFiniteLoss(f"the loss is {gathered.tolist()} at step {step + 1}")
                        accelerator.backward(loss)
                    finally:
                        unwrapped.release()
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(list(trainable.values()), o.max_grad_norm)
                        if o.mixed_precision != "fp16" and not math.isfinite(float(grad_norm)):
                            raise NonFiniteLoss(f"the gradient norm is {float(grad_norm)} at step {step + 1}")
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if ema is not None and accelerator.sync_gradients:
                        ema.step(trainable.values())
                losses.append(float(gathered.mean()))
            lr_scheduler.step()
            step += 1
            samples_seen += per_step
            record = {"step": step, "loss": sum(losses) / len(losses), "lr": lr_scheduler.get_last_lr()[0],
                      "grad_norm": None if grad_norm is None else float(grad_norm),
                      "seconds": time.perf_counter() - started, "data_wait": waited,
                      "peak_gib": peak_memory_gib(accelerator.device)}
            if accelerator.is_main_process:
                with open(run_dir / "metrics.jsonl", "a") as log:
                    log.write(json.dumps(record) + "\n")
            if config.debug.checksums:
                with open(run_dir / f"checksums-rank{rank}.jsonl", "a") as log:
                    log.write(json.dumps({"step": step, "checksum": checksum(trainable),
                                          "rank_loss": float(loss.detach())}) + "\n")
            if step % config.run.log_every == 0 or step == 1 or step == o.steps:
                if accelerator.trackers:
                    accelerator.log({k: v for k, v in record.items() if k != "step" and v is not None}, step=step)
                accelerator.print(_progress(record, o.steps, step - first_step, time.perf_counter() - run_started),
                                  flush=True)
            if step % config.run.checkpoint_every == 0 or step == o.steps:
                _save(run_dir, step, samples_seen, config, accelerator, trainable, optimizer, lr_scheduler, sharded, ema)
            if config.run.validate_every and held and step % config.run.validate_every == 0:
                _validate(model, dataset, len(dataset) - 1, run_dir, step, config, accelerator)
            if config.debug.stop_after == step:
                accelerator.print(f"stopping after step {step} (debug.stop_after)")
                return None
        final = run_dir / FINAL
        if ema is not None:  # the exported weights are the average; the checkpoints keep both
            ema.copy_to(trainable.values())
            accelerator.print(f"exporting the EMA of the trained weights (decay {o.ema_decay})")
        if accelerator.is_main_process:
            save_checkpoint(model, final)
        accelerator.wait_for_everyone()
        return final if accelerator.is_main_process else None
    finally:
        accelerator.end_training()


def _save(run_dir: Path, step: int, samples_seen: int, config: TrainConfig, accelerator, trainable,
          optimizer, lr_scheduler, sharded: bool, ema=None) -> None:
    folder = ckpt.staging_dir(run_dir, step)
    if accelerator.is_main_process:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    accelerator.wait_for_everyone()
    ckpt.write_rng_state(folder, accelerator.process_index)
    if sharded:  # sharded optimizer state: accelerate's own format, inside our atomic folder
        accelerator.save_state(str(folder / "accelerate"))
    if accelerator.is_main_process:
        state = {"step": step, "samples_seen": samples_seen, "world_size": accelerator.num_processes,
                 "config": config.to_dict()}
        scaler = getattr(accelerator, "scaler", None)
        ckpt.write_main_files(folder, {} if sharded else trainable, None if sharded else optimizer, lr_scheduler,
                              state, scaler)
        if ema is not None:
            torch.save(ema.state_dict(), folder / "ema.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ckpt.publish(run_dir, step, config.run.keep_checkpoints)
    accelerator.wait_for_everyone()


def _restore(folder: Path, accelerator, trainable, optimizer, lr_scheduler, sharded: bool,
             ema=None) -> tuple[int, int]:
    state = json.loads((folder / "state.json").read_text())
    if sharded:
        accelerator.load_state(str(folder / "accelerate"))
    else:
        ckpt.read_trainable(folder, trainable)
        optimizer.load_state_dict(ckpt.load_torch(folder / "optimizer.pt"))
    lr_scheduler.load_state_dict(ckpt.load_torch(folder / "lr_scheduler.pt"))
    if ema is not None:
        if not (folder / "ema.pt").is_file():
            raise AA2InputError(f"{folder} was written without optim.ema_decay: resume it without EMA, or start a new run")
        ema.load_state_dict(ckpt.load_torch(folder / "ema.pt"))
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and (folder / "grad_scaler.pt").is_file():
        scaler.load_state_dict(ckpt.load_torch(folder / "grad_scaler.pt"))
    if not ckpt.read_rng_state(folder, accelerator.process_index):
        accelerator.print(f"note: {folder} has no RNG state for rank {accelerator.process_index} "
                          f"(it was written by {state['world_size']} processes); training draws are per-step seeded")
    return int(state["step"]), int(state["samples_seen"])


def _validate(model: AA2Model, dataset, index: int, run_dir: Path, step: int, config: TrainConfig,
              accelerator) -> None:
    """Render the held-out clip beside its ground truth as an mp4 (main process only)."""
    if accelerator.is_main_process:
        from .render import render_clip, write_video

        sample = dataset[index]
        model.denoising_net.eval()
        model.reference_net.eval()
        try:
            with torch.no_grad(), accelerator.autocast():
                rendered = render_clip(model, sample, SamplingSettings(
                    steps=config.run.validation_steps, cfg=config.run.validation_cfg, seed=config.optim.seed),
                    config.data.depth_convention)
        finally:
            model.denoising_net.train()
            model.reference_net.train()
        truth = sample["frames"].float().cpu()
        write_video(run_dir / "validation" / f"{ckpt.checkpoint_name(step)}-{sample.get('video_id', index)}.mp4",
                    torch.cat([truth, rendered], dim=-1))
    accelerator.wait_for_everyone()


def _progress(record: dict[str, Any], steps: int, done_here: int, elapsed: float) -> str:
    """One line a person reads while a run trains: where it is, its loss, and when it will end.

    The time left is extrapolated from the `done_here` steps this process ran in `elapsed` seconds.
    """
    done = record["step"]
    eta = elapsed / max(done_here, 1) * (steps - done)
    peak = f"  peak {record['peak_gib']:.1f} GiB" if record.get("peak_gib") is not None else ""
    return (f"step {done}/{steps}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  {record['seconds']:.2f} s/step"
            f"  (data wait {record['data_wait'] / max(record['seconds'], 1e-9):.0%}){peak}  ~{eta / 60:.0f} min left")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step (written after the checkpoint by the interrupted run)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in lines))


# ------------------------------------------------------------------------------------------ CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="recipe YAML (train/recipes/*.yaml) or a run's config.yaml")
    parser.add_argument("--stage", choices=["image", "motion"], help="the recipe's stage to run (default: its default_stage)")
    parser.add_argument("--data", required=True, help="folder written by python -m train.prepare")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, logs, validation videos, final weights")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue from the run folder's latest checkpoint, or from CHECKPOINT (a path, or a "
                             "name such as step-00001000 under RUN/checkpoints)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value (YAML syntax), e.g. --set optim.steps=10; repeatable")
    parser.add_argument("--dataset", metavar="MODULE:CALLABLE",
                        help="a dataset class taking PreparedClips' arguments, instead of train.dataset.PreparedClips")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_recipe(args.config, args.stage, args.set)
        final = train(config, args.data, args.out, resume=args.resume, dataset_factory=args.dataset)
    except NonFiniteLoss as error:
        latest = ckpt.latest_checkpoint(args.out)
        where = f"the last good checkpoint is {latest}" if latest else "no checkpoint had been written yet"
        print(f"error: training stopped: {error}; nothing was written from these weights and {where}. Lower "
              "optim.learning_rate, use bf16 instead of fp16, or check the data, then --resume.", file=sys.stderr)
        return 3
    except AA2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if final is not None:
        print(f"exported {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
