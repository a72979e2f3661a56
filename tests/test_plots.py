"""The shared plots: loss curves from a Trainer's log history and memory breakdown bars, titled and labelled."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from course_utils.memory import estimate_memory  # noqa: E402
from course_utils.plots import loss_points, plot_loss_curves, plot_memory_breakdown  # noqa: E402

# What Trainer.state.log_history looks like: training logs, evaluation logs, and a final summary.
LOG_HISTORY = [
    {"eval_loss": 4.3, "eval_runtime": 1.0, "step": 0},
    {"loss": 4.1, "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": 0.1, "step": 5},
    {"loss": 3.9, "grad_norm": 0.9, "learning_rate": 8e-4, "epoch": 0.2, "step": 10},
    {"eval_loss": 3.95, "eval_runtime": 1.0, "step": 10},
    {"train_runtime": 12.0, "train_loss": 4.0, "step": 10},
]


def test_loss_points_read_training_and_evaluation_losses_from_the_log_history():
    assert loss_points(LOG_HISTORY, "loss") == ([5, 10], [4.1, 3.9])
    assert loss_points(LOG_HISTORY, "eval_loss") == ([0, 10], [4.3, 3.95])


def test_loss_curves_have_a_title_labelled_axes_and_both_curves():
    fig = plot_loss_curves(LOG_HISTORY, title="My run")
    ax = fig.axes[0]
    assert ax.get_title() == "My run"
    assert "step" in ax.get_xlabel() and "loss" in ax.get_ylabel()
    assert [line.get_label() for line in ax.get_lines()] == ["training loss", "evaluation loss (held-out text)"]
    plt.close(fig)


def test_loss_curves_explain_an_empty_log_history():
    with pytest.raises(ValueError, match="logging_steps"):
        plot_loss_curves([{"train_runtime": 1.0, "step": 0}])


def test_memory_breakdown_stacks_the_components_to_the_total_and_marks_the_measurement():
    estimates = {"full": estimate_memory("meta-llama/Llama-2-7b-hf", "full", "float16"),
                 "qlora": estimate_memory("meta-llama/Llama-2-7b-hf", "qlora", "float16")}
    fig = plot_memory_breakdown(estimates, measured={"full": 100e9})
    ax = fig.axes[0]
    tops = {}
    for bar in ax.patches:
        x = round(bar.get_x() + bar.get_width() / 2)
        tops[x] = max(tops.get(x, 0), bar.get_y() + bar.get_height())
    assert tops[0] == pytest.approx(estimates["full"].total / 1e9)
    assert tops[1] == pytest.approx(estimates["qlora"].total / 1e9)
    assert ax.get_title() and "GB" in ax.get_ylabel()
    assert "measured peak" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
