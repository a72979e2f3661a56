"""Hidden tests of the exercise exercise_1_first_lora, generated from its master by course_utils.exercises: do not edit."""

EXERCISE = 'exercise_1_first_lora'
POINTS = {'test_q1_format_example_on_the_graders_example': 1, 'test_q1_question_prompt_on_the_graders_question': 1, 'test_q2_rank_and_alpha': 1, 'test_q2_modules_dropout_bias_and_task': 1, 'test_q3_the_saved_lora_b_matrices_were_trained': 2, 'test_q3_held_out_perplexity_is_at_least_a_tenth_lower': 2, 'test_q3_perplexity_on_the_graders_own_problems_is_at_least_a_tenth_lower': 2, 'test_q4_counts_the_completions_with_an_answer_line': 1, 'test_q4_the_line_holds_the_number_alone': 1}


# hidden tests of q1, 1 point(s) each
def test_q1_format_example_on_the_graders_example(submission):
    """format_example must give the question prompt, one space and the stripped response for any example: the grader
    tries one of its own, with spaces and newlines around both fields and an answer of several lines."""
    example = {"instruction": "\n A tank holds 40 litres and leaks 3 litres an hour. How much is left after 5 hours? ",
               "response": "  It loses 3 * 5 = 15 litres.\nIt has 40 - 15 = 25 litres left.\n#### 25\n\n"}
    expected = ("Question: A tank holds 40 litres and leaks 3 litres an hour. How much is left after 5 hours?\n"
                "Answer: It loses 3 * 5 = 15 litres.\nIt has 40 - 15 = 25 litres left.\n#### 25")
    found = submission.call("q1", "format_example", example)
    assert found == expected, f"expected {expected!r}, got {found!r}"


def test_q1_question_prompt_on_the_graders_question(submission):
    """question_prompt must fill the stripped question into PROMPT, so that a question is asked exactly as the
    training texts begin."""
    found = submission.call("q1", "question_prompt", "What is 7 times 8?\n")
    assert found == "Question: What is 7 times 8?\nAnswer:", f"got {found!r}"


# hidden tests of q2, 1 point(s) each
import json


def _saved_adapter(submission):
    """The folder of the adapter the notebook saved; an AssertionError saying what to do when it is missing."""
    folder = submission.outputs / "exercise_1_first_lora" / "adapter"
    assert (folder / "adapter_config.json").exists() and (folder / "adapter_model.safetensors").exists(), (
        "there is no saved adapter (adapter/ in the exercise's output folder): run the notebook to the end; the cell "
        "after q3 saves it")
    return folder


def test_q2_rank_and_alpha(submission):
    """The saved adapter must be plain LoRA (no DoRA, no rsLoRA) with the chapter's rank r=8 and lora_alpha=16."""
    config = json.loads((_saved_adapter(submission) / "adapter_config.json").read_text())
    found = {key: config.get(key) for key in ("peft_type", "r", "lora_alpha", "use_dora", "use_rslora")}
    assert found == {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_dora": False, "use_rslora": False}, found


def test_q2_modules_dropout_bias_and_task(submission):
    """The saved adapter must sit on q_proj, k_proj, v_proj and o_proj, with lora_dropout 0.05, no bias, for a causal
    language model."""
    config = json.loads((_saved_adapter(submission) / "adapter_config.json").read_text())
    modules = config.get("target_modules")
    assert isinstance(modules, list) and sorted(modules) == ["k_proj", "o_proj", "q_proj", "v_proj"], modules
    found = {key: config.get(key) for key in ("lora_dropout", "bias", "task_type")}
    assert found == {"lora_dropout": 0.05, "bias": "none", "task_type": "CAUSAL_LM"}, found


# hidden tests of q3, 2 point(s) each
import functools

# Problems written for the grader, in GSM8K's style; no notebook trains or measures on them.
GRADER_PROBLEMS = [
    (("A baker makes 36 muffins in the morning and twice as many in the afternoon. She sells 80 muffins. How many "
      "muffins are left?"),
     ("In the afternoon she makes 36 * 2 = 72 muffins.\nIn all she makes 36 + 72 = 108 muffins.\n"
      "After selling 80 she has 108 - 80 = 28 muffins left.\n#### 28")),
    (("Tom reads 15 pages every day. His book has 240 pages and he has already read 60 of them. How many more days "
      "does he need to finish the book?"),
     "Tom still has 240 - 60 = 180 pages to read.\nAt 15 pages a day he needs 180 / 15 = 12 days.\n#### 12"),
    ("A school bus holds 48 students. Seven classes of 30 students go on a trip. How many buses does the school need?",
     ("There are 7 * 30 = 210 students.\nFour buses hold 4 * 48 = 192 students, too few, and five buses hold "
      "5 * 48 = 240 students.\nThe school needs 5 buses.\n#### 5")),
    (("Maria buys 3 notebooks at $4 each and 2 pens at $1.50 each. She pays with a $20 bill. How much change does "
      "she get?"),
     ("The notebooks cost 3 * 4 = $12.\nThe pens cost 2 * 1.50 = $3.\nShe spends 12 + 3 = $15.\n"
      "Her change is 20 - 15 = $5.\n#### 5")),
    (("A garden has 5 rows of tomato plants with 8 plants in each row. Each plant gives 6 tomatoes. How many "
      "tomatoes does the garden give?"),
     "There are 5 * 8 = 40 plants.\nThey give 40 * 6 = 240 tomatoes.\n#### 240"),
    ("Sam is 4 years older than his sister. In 6 years their ages will add up to 30. How old is his sister now?",
     ("In 6 years each of them is 6 years older, so their ages now add up to 30 - 6 - 6 = 18.\n"
      "Without Sam's extra 4 years that is 18 - 4 = 14, two equal ages.\nHis sister is 14 / 2 = 7 years old.\n#### 7")),
    (("A train travels at 60 miles per hour for 2 hours and then at 45 miles per hour for 3 hours. How far does it "
      "travel in all?"),
     ("First it travels 60 * 2 = 120 miles.\nThen it travels 45 * 3 = 135 miles.\n"
      "In all it travels 120 + 135 = 255 miles.\n#### 255")),
    (("A box holds 24 crayons. Lena has 3 full boxes and gives away a quarter of her crayons. How many crayons does "
      "she keep?"),
     "Lena has 3 * 24 = 72 crayons.\nShe gives away 72 / 4 = 18 crayons.\nShe keeps 72 - 18 = 54 crayons.\n#### 54"),
]


def _grader_text(question: str, answer: str) -> str:
    """The grader's own layout of an example (q1's), so that a wrong q1 cannot change the perplexity measured here."""
    return f"Question: {question.strip()}\nAnswer: {answer.strip()}"


@functools.lru_cache(maxsize=1)
def _base_and_tuned(adapter: str):
    from peft import PeftModel

    from course_utils.models import load_model
    from course_utils.profiles import get_profile

    profile = get_profile("tiny")
    base, tokenizer = load_model(profile, "lora", verbose=False)
    tuned = PeftModel.from_pretrained(load_model(profile, "lora", verbose=False)[0], adapter)
    return base, tuned, tokenizer


def _perplexities(submission, texts: list[str]) -> tuple[float, float]:
    """(base, tuned) perplexity of the texts: the tiny model without and with the saved adapter."""
    from course_utils.evaluation import perplexity

    base, tuned, tokenizer = _base_and_tuned(str(_saved_adapter(submission)))
    return perplexity(base, tokenizer, texts, block=128), perplexity(tuned, tokenizer, texts, block=128)


def test_q3_the_saved_lora_b_matrices_were_trained(submission):
    """LoRA's B matrices start at zero: in the adapter you saved, at least one must have moved, and all must be
    finite numbers."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(_saved_adapter(submission) / "adapter_model.safetensors"))
    b_matrices = [tensor for name, tensor in weights.items() if "lora_B" in name]
    assert b_matrices, "the saved adapter holds no lora_B matrix: is it a LoRA adapter?"
    assert all(torch.isfinite(t).all() for t in b_matrices), "the saved lora_B matrices hold inf or nan"
    assert any(t.abs().max() > 0 for t in b_matrices), "every lora_B matrix of the saved adapter is zero: untrained"


def test_q3_held_out_perplexity_is_at_least_a_tenth_lower(submission):
    """On the held-out problems (every fifth of the shipped file, rebuilt by the grader), the tiny model with your
    adapter must have at most 0.9 times the base model's perplexity."""
    from course_utils import data
    from course_utils.paths import DATA_DIR

    rows = data.read_jsonl(DATA_DIR / "instruct" / "gsm8k" / "gsm8k_train_first200.jsonl")[4::5]
    texts = [_grader_text(e["instruction"], e["response"]) for e in map(data.from_gsm8k, rows)]
    base, tuned = _perplexities(submission, texts)
    assert tuned <= 0.9 * base, f"held-out perplexity: base {base:.1f}, with your adapter {tuned:.1f}"


def test_q3_perplexity_on_the_graders_own_problems_is_at_least_a_tenth_lower(submission):
    """On maths problems the grader wrote itself (never in any training set), the tiny model with your adapter must
    have at most 0.9 times the base model's perplexity: the adapter learned the domain, not just its examples."""
    base, tuned = _perplexities(submission, [_grader_text(q, a) for q, a in GRADER_PROBLEMS])
    assert tuned <= 0.9 * base, f"perplexity on the grader's problems: base {base:.1f}, with your adapter {tuned:.1f}"


# hidden tests of q4, 1 point(s) each
def test_q4_counts_the_completions_with_an_answer_line(submission):
    """answer_format_share must count the completions with a '#### <number>' line (negative numbers, thousands
    commas, decimals and extra spaces at the line's ends included) and give zero for no completions."""
    completions = ["She has 3 + 4 = 7 apples.\n#### 7", "#### 1,250", "He lost 2.5 kg.\n#### -2.5\n",
                   "The answer is 12.", "#### twelve", "", "  ####   40  ", "12\n####"]
    found = submission.call("q4", "answer_format_share", completions)
    assert isinstance(found, (int, float)) and abs(found - 4 / 8) < 1e-9, f"expected 0.5 (4 of 8), got {found!r}"
    found = submission.call("q4", "answer_format_share", [])
    assert found == 0, f"an empty list has a share of zero, got {found!r}"


def test_q4_the_line_holds_the_number_alone(submission):
    """A line counts only when it starts with exactly four '#' and holds nothing after the number: not 'the answer is
    #### 15', not '#### 15 apples', not '#### 15.', not '##### 15'; a line in the middle of a completion counts."""
    completions = ["So the answer is #### 15", "#### 15 apples", "#### 15.", "Step one.\n#### 15\nStep two.",
                   "##### 15"]
    found = submission.call("q4", "answer_format_share", completions)
    assert isinstance(found, (int, float)) and abs(found - 1 / 5) < 1e-9, f"expected 0.2 (1 of 5), got {found!r}"
