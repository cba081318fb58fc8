"""One registry, offered whole at every door: the node dropdown, the CLI's --sampler and SamplingSettings."""

from __future__ import annotations

import argparse

import pytest

from aa2.errors import AA2InputError
from aa2.pipeline.inputs import SamplingSettings
from aa2.sampling.k_samplers import sample_dpmpp_2m, sample_euler
from aa2.sampling.registry import DEFAULT_SAMPLER, SAMPLER_CHOICES, SAMPLERS, sampler_function
from aa2.sampling.schedulers import DIFFUSERS_SCHEDULERS, SchedulerSampler


def test_the_registry_keeps_the_names_users_have_and_adds_the_k_samplers():
    assert list(SAMPLERS) == [*DIFFUSERS_SCHEDULERS, "k_euler", "k_dpmpp_2m"]
    assert SAMPLER_CHOICES == ("default", *SAMPLERS)
    assert sampler_function("default") is SAMPLERS["ddim"] and DEFAULT_SAMPLER == "ddim"
    assert SAMPLERS["k_euler"] is sample_euler and SAMPLERS["k_dpmpp_2m"] is sample_dpmpp_2m
    assert all(isinstance(SAMPLERS[name], SchedulerSampler) for name in DIFFUSERS_SCHEDULERS)


def _cli_choices() -> tuple[str, ...]:
    from aa2.cli import build_parser

    animate = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["animate"]
    return tuple(next(a for a in animate._actions if a.dest == "sampler").choices)


def test_every_door_offers_exactly_the_registry(pack):
    sampling = pack.nodes.nodes_sampling
    for node in (sampling.AA2Sampler, sampling.LongVideoChainer):
        choices, options = node.INPUT_TYPES()["required"]["sampler_name"]
        assert tuple(choices) == SAMPLER_CHOICES and options["default"] == "default"
    assert _cli_choices() == SAMPLER_CHOICES


@pytest.mark.parametrize("name", SAMPLER_CHOICES)
def test_sampling_settings_accept_every_registry_name(name):
    SamplingSettings(sampler=name).check()


def test_sampling_settings_refuse_an_unknown_sampler_naming_every_choice():
    with pytest.raises(AA2InputError, match="unknown sampler 'heun'.*ddim.*k_euler.*k_dpmpp_2m"):
        SamplingSettings(sampler="heun").check()


def test_lcm_past_its_distilled_steps_is_refused_before_any_model_work():
    """diffusers' LCMScheduler raised a bare ValueError mid-run past 50 steps (the node's widget allows 200)."""
    from aa2.errors import AA2InputError
    from aa2.pipeline.inputs import SamplingSettings

    SamplingSettings(sampler="lcm", steps=50).check()
    with pytest.raises(AA2InputError, match="lcm sampler takes at most 50 steps.*got 51"):
        SamplingSettings(sampler="lcm", steps=51).check()
    SamplingSettings(sampler="ddim", steps=51).check()


@pytest.mark.parametrize("name", ["dpmpp_2m", "unipc"])
def test_multistep_samplers_are_refused_as_many_steps_as_timesteps(name):
    """At steps == 1000, diffusers' DPM-Solver and UniPC made every timestep 1 without a word."""
    from aa2.config import SchedulerSettings
    from aa2.errors import AA2InputError
    from aa2.pipeline.inputs import SamplingSettings
    from aa2.sampling.schedulers import make_scheduler

    scheduler = make_scheduler(name, SchedulerSettings())
    scheduler.set_timesteps(999)
    assert len(set(scheduler.timesteps.tolist())) == 999  # one fewer still walks the schedule
    scheduler.set_timesteps(1000)
    assert len(set(scheduler.timesteps.tolist())) == 1  # every step timestep 1: what the refusal prevents
    SamplingSettings(sampler=name, steps=999).check_steps(1000)
    with pytest.raises(AA2InputError, match="at most 999"):
        SamplingSettings(sampler=name, steps=1000).check_steps(1000)
    SamplingSettings(sampler="ddim", steps=1000).check_steps(1000)
