"""The training-task contract: checked when the trainer is built; the base's defaults; the NaN guard."""

import pytest
import torch
from torch import nn

from vipr.data.batch import Batch
from vipr.engine.card import make_card
from vipr.engine.guards import LossGuard
from vipr.engine.task import TaskBase, TrainingTask, check_task
from vipr.engine.trainer import Interrupted, LoopSettings, Trainer
from vipr.errors import ConfigError, ContractError, TrainingError


CARD = make_card(architecture="tiny", architecture_kwargs={}, image_size=2, mean=(0.5,) * 3, std=(0.25,) * 3,
                 method="regression", config_hash="0" * 16)


class Regression(TaskBase, nn.Module):
    """A minimal task: the mean pixel of each image regressed onto its label."""

    def __init__(self, loss_scale: float = 1.0):
        super().__init__()
        self.net, self.loss_scale = nn.Linear(3, 1), loss_scale

    def training_step(self, batch):
        x = batch.images.float().mean(dim=(2, 3)) / 255  # (B, 3)
        loss = (self.net(x).squeeze(1) - batch.labels.float()).pow(2).mean() * self.loss_scale
        return {"loss": loss, "mean_pixel": x.mean()}

    def deployable(self):
        return self.net


class NoTrainingStep(TaskBase, nn.Module):
    def deployable(self):
        return self


class NoDeployable(TaskBase, nn.Module):
    def training_step(self, batch):
        return {"loss": torch.zeros(())}


class NoHooks(nn.Module):  # training_step and deployable, but no TaskBase
    def training_step(self, batch):
        return {"loss": torch.zeros(())}

    def deployable(self):
        return self


class Loader:
    """Two fixed batches an epoch (the loader protocol the trainer reads)."""

    def __init__(self, n: int = 2):
        g = torch.Generator().manual_seed(0)
        self.batches = [Batch(torch.randint(0, 256, (4, 3, 2, 2), dtype=torch.uint8, generator=g),
                              torch.arange(4), torch.arange(4) + 4 * i) for i in range(n)]

    def __len__(self):
        return len(self.batches)

    def set_epoch(self, epoch, start_step=0):
        pass

    def iter_from(self, step):
        return iter(self.batches[step:])


def build(task, tmp_path, **settings):
    optimizer = torch.optim.SGD([*task.parameters(), nn.Parameter(torch.zeros(1))], lr=0.1)
    return Trainer(task, optimizer, Loader(), LoopSettings(epochs=2, precision="fp32", progress=False, **settings),
                   tmp_path, CARD, torch.device("cpu"))


@pytest.mark.parametrize("task, missing", [(NoTrainingStep(), "training_step"), (NoDeployable(), "deployable"),
                                           (NoHooks(), "on_epoch_start")])
def test_a_task_missing_a_member_fails_at_construction(task, missing, tmp_path):
    with pytest.raises(ContractError, match=rf"has no {missing}\(\)") as err:
        build(task, tmp_path)
    assert isinstance(err.value, TypeError) and "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing written: it failed before any save


def test_a_plain_object_is_not_a_task(tmp_path):
    with pytest.raises(ContractError, match="must be an nn.Module"):
        check_task(object())


def test_task_base_gives_the_optional_members():
    task = Regression()
    check_task(task)
    assert isinstance(task, TrainingTask)
    assert task.on_epoch_start(0) == {} and task.on_step_end(0.5) is None
    state = task.checkpoint_state()
    assert set(state) == {"net.weight", "net.bias"}
    other = Regression()
    other.load_checkpoint_state(state)
    assert torch.equal(other.net.weight, task.net.weight)
    batch = Loader().batches[0]
    assert torch.equal(task(batch)["loss"], task.training_step(batch)["loss"])  # forward = training_step


def test_no_epochs_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        Trainer(Regression(), torch.optim.SGD(Regression().parameters(), lr=0.1), Loader(),
                LoopSettings(epochs=0, precision="fp32"), tmp_path, CARD, torch.device("cpu"))


def test_loss_guard_stops_with_step_and_last_finite_loss():
    guard = LossGuard("stop")
    assert guard.check(torch.tensor(2.5), 1) and guard.check(torch.tensor(1.25), 2)
    with pytest.raises(TrainingError, match=r"loss is nan at step 3 \(last finite loss 1.25 at step 2\)") as err:
        guard.check(torch.tensor(float("nan")), 3)
    assert "\n" not in str(err.value) and "train.on_nan=skip" in str(err.value)
    skip = LossGuard("skip")
    assert not skip.check(torch.tensor(float("inf")), 1) and skip.skipped == 1
    with pytest.raises(ConfigError, match="on_nan"):
        LossGuard("ignore")


def test_skip_drops_the_update_but_counts_the_step(tmp_path):
    task = Regression(loss_scale=float("nan"))
    trainer = build(task, tmp_path, on_nan="skip")
    before = task.net.weight.detach().clone()
    records = []
    trainer.fit(records.append)
    assert trainer.step == 4 and torch.equal(task.net.weight, before)
    assert records[-1]["skipped_steps"] == 4


class SelfSteppingRegression(Regression):
    """Regression that steps its own two optimizers (weight and bias), as bilevel NAS does."""

    def __init__(self):
        super().__init__()
        self.opts = {"weight": torch.optim.SGD([self.net.weight], lr=0.1, momentum=0.9),
                     "bias": torch.optim.Adam([self.net.bias], lr=0.01)}
        self.lrs_seen = []

    def training_step(self, batch):
        losses = super().training_step(batch)
        for opt in self.opts.values():
            opt.zero_grad()
        losses["loss"].backward()
        for opt in self.opts.values():
            opt.step()
        self.lrs_seen.append(self.opts["weight"].param_groups[0]["lr"])
        return {k: v.detach() for k, v in losses.items()}

    def optimizers(self):
        return self.opts

    def learning_rates(self, epoch):
        return {"weight": 0.1 / (epoch + 1)}


def test_a_self_stepping_task_gets_its_learning_rates_and_its_optimizers_checkpointed(tmp_path):
    task = SelfSteppingRegression()
    trainer = Trainer(task, None, Loader(), LoopSettings(epochs=2, precision="fp32", progress=False), tmp_path,
                      CARD, torch.device("cpu"))
    trainer.fit(lambda record: None)
    assert task.lrs_seen == [0.1, 0.1, 0.05, 0.05] and trainer.step == 4
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["state"]
    assert sorted(state["optimizers"]) == ["bias", "weight"] and "optimizer" not in state
    again = SelfSteppingRegression()
    Trainer(again, None, Loader(), LoopSettings(epochs=2, precision="fp32", progress=False), tmp_path, CARD,
            torch.device("cpu")).restore(tmp_path / "checkpoint.pt")
    for name, opt in task.opts.items():
        saved, restored = opt.state_dict()["state"], again.opts[name].state_dict()["state"]
        assert all(torch.equal(saved[0][k], restored[0][k]) for k in saved[0]), name


def test_optimizer_mix_ups_fail_at_construction(tmp_path):
    settings = LoopSettings(epochs=1, precision="fp32", progress=False)
    with pytest.raises(ContractError, match=r"got no optimizer and has no optimizers\(\)"):
        Trainer(Regression(), None, Loader(), settings, tmp_path, CARD, torch.device("cpu"))
    task = SelfSteppingRegression()
    with pytest.raises(ContractError, match="steps its own optimizers"):
        Trainer(task, task.opts["weight"], Loader(), settings, tmp_path, CARD, torch.device("cpu"))
    with pytest.raises(ConfigError, match="on_nan=skip cannot drop a step"):
        Trainer(task, None, Loader(), LoopSettings(epochs=1, precision="fp32", progress=False, on_nan="skip"),
                tmp_path, CARD, torch.device("cpu"))
    assert not list(tmp_path.iterdir())


def test_finished_ends_the_run_before_its_last_epoch(tmp_path):
    class EndsAfterOneEpoch(Regression):
        def on_epoch_end(self, epoch):
            self.ended = epoch + 1
            return {"ended": self.ended}

        def finished(self):
            return getattr(self, "ended", 0) >= 1

    records = []
    trainer = build(EndsAfterOneEpoch(), tmp_path)
    trainer.fit(records.append)
    assert trainer.step == 2 and [r["ended"] for r in records if "ended" in r] == [1]


def test_max_steps_ends_mid_epoch_and_a_resume_continues_to_it(tmp_path, monkeypatch):
    torch.manual_seed(0)
    full = build(Regression(), tmp_path / "full", max_steps=3)  # 2 epochs of 2 steps, cut at 3
    full.fit(lambda record: None)
    assert full.step == 3 and full.total_steps == 3
    torch.manual_seed(0)
    cut = build(Regression(), tmp_path / "cut", max_steps=3)
    original = Trainer.train_step

    def stop_after_two(self, batch):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", stop_after_two)
    with pytest.raises(Interrupted, match="step 2"):
        cut.fit(lambda record: None)
    monkeypatch.setattr(Trainer, "train_step", original)
    again = build(Regression(), tmp_path / "cut", max_steps=3)
    again.restore(tmp_path / "cut" / "checkpoint.pt")
    again.fit(lambda record: None)
    assert again.step == 3
    for a, b in zip(full.model.parameters(), again.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
