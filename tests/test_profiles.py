"""The profile decision: a pure function of the hardware, tested on the four machines the course is written for."""
import pytest

from course_utils.hardware import EXAMPLE_MACHINES, Hardware, precision_for
from course_utils.profiles import JOBS, PROFILES, TINY, choose_profile, get_profile

CPU = EXAMPLE_MACHINES["CPU laptop"]
T4 = EXAMPLE_MACHINES["Colab free T4"]
A100 = EXAMPLE_MACHINES["A100 40 GB"]
MAC = EXAMPLE_MACHINES["Mac (Apple M2)"]


def test_example_machines_are_the_ones_the_course_promises():
    assert T4.compute_capability == (7, 5) and T4.gpu_memory_gb == 15.0 and T4.on_colab
    assert A100.compute_capability == (8, 0)


@pytest.mark.parametrize("machine, precision", [(CPU, "float32"), (T4, "float16"), (A100, "bfloat16"), (MAC, "float32")])
def test_precision_comes_from_compute_capability(machine, precision):
    assert precision_for(machine) == precision


def test_cpu_box_gets_the_offline_tiny_profile():
    profile = choose_profile(CPU)
    assert profile.name == "tiny" and profile.device == "cpu" and profile.dtype == "float32"
    assert all(profile.model_for(job) == TINY for job in JOBS)
    assert not profile.needs_network


def test_colab_t4_gets_fp16_and_4bit_for_the_3b_model():
    profile = choose_profile(T4)
    assert profile.name == "t4" and profile.device == "cuda" and profile.dtype == "float16"
    assert profile.uses_4bit("qlora") and "3B" in profile.model_for("qlora")
    assert not profile.uses_4bit("lora")  # the 1B LoRA model fits a T4 in fp16


def test_a100_gets_bf16():
    profile = choose_profile(A100)
    assert profile.name == "gpu" and profile.dtype == "bfloat16"


def test_mac_gets_mps_without_4bit():
    profile = choose_profile(MAC)
    assert profile.name == "mps" and profile.device == "mps" and profile.four_bit_jobs == ()


def test_older_gpu_with_more_memory_still_gets_fp16():
    v100 = Hardware("cuda", 60, 8, "Tesla V100-SXM2-32GB", 34.1, (7, 0))
    assert choose_profile(v100).dtype == "float16"


def test_asking_for_t4_on_an_a100_keeps_bf16():
    profile = choose_profile(A100, "t4")
    assert profile.name == "t4" and profile.dtype == "bfloat16"


def test_tiny_can_be_chosen_on_any_machine():
    for machine in (CPU, T4, A100, MAC):
        assert choose_profile(machine, "tiny").name == "tiny"


def test_gpu_profile_on_a_cpu_box_is_refused_with_advice():
    with pytest.raises(ValueError, match="COURSE_PROFILE=tiny"):
        choose_profile(CPU, "t4")


def test_unknown_profile_names_the_choices():
    with pytest.raises(ValueError, match="tiny, cpu-hub"):
        choose_profile(CPU, "huge")


def test_unknown_job_is_refused():
    with pytest.raises(ValueError, match="unknown job"):
        PROFILES["tiny"].model_for("pretraining")


def test_environment_variable_and_parameter_override(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "cpu-hub")
    assert get_profile().name == "cpu-hub"
    assert get_profile("tiny").name == "tiny"  # the notebook parameter wins over the environment
    monkeypatch.delenv("COURSE_PROFILE")
    assert get_profile().name == "tiny"  # this box has no GPU


def test_summary_says_what_and_why():
    text = choose_profile(T4).summary()
    assert "Profile 't4'" in text and "compute capability 7.5" in text and "fp16" in text
    assert "Tesla T4" in text and "4-bit NF4" in text


def test_every_profile_names_a_model_for_every_job():
    for profile in PROFILES.values():
        assert set(profile.models) == set(JOBS)
        assert set(profile.four_bit_jobs) <= set(JOBS)
