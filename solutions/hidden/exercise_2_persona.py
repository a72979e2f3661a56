"""Hidden tests of the exercise exercise_2_persona, generated from its master by course_utils.exercises: do not edit."""

EXERCISE = 'exercise_2_persona'
POINTS = {'test_q1_converts_the_graders_entries': 1, 'test_q1_records_pass_the_course_validator': 1, 'test_q1_any_number_of_entries_and_exchanges': 1, 'test_q2_a_trained_lora_adapter': 2, 'test_q2_lower_loss_on_unseen_detective_replies': 2, 'test_q3_tells_the_detective_from_an_assistant': 1, 'test_q3_a_rate_not_a_count': 1}


# hidden tests of q1, 1 point(s) each
import json
import tempfile
from pathlib import Path

from course_utils import data

Q1_GRADER_ENTRIES = [
    {"system": "You are a lighthouse keeper who has seen too many storms.", "conversations": [
        {"user": "Any ships tonight?", "assistant": "Two. Both late, both lying about their cargo."},
        {"user": "How can you tell?", "assistant": "They ride too high in the water."},
        {"user": "Do you ever sleep?", "assistant": "In the daytime, like the owls."}]},
    {"system": "You are a patient chess teacher.", "conversations": [
        {"user": "How should I open?", "assistant": "Put a pawn in the centre, then bring out a knight."},
        {"user": "And after that?", "assistant": "Castle early. A safe king lets you think."}]},
]


def q1_expected(entries):
    return [{"messages": [{"role": "system", "content": e["system"]}]
             + [{"role": role, "content": x[role]} for x in e["conversations"] for role in ("user", "assistant")]}
            for e in entries]


def test_q1_converts_the_graders_entries(submission):
    """chapter_to_messages must give one record per entry: the entry's own system prompt, then the user and
    assistant turns of every exchange in order, with the texts unchanged."""
    records = submission.call("q1", "chapter_to_messages", Q1_GRADER_ENTRIES)
    assert records == q1_expected(Q1_GRADER_ENTRIES), f"got {json.dumps(records)[:300]}"


def test_q1_records_pass_the_course_validator(submission):
    """The records must be valid training data in course_utils.data's messages format (roles, their order, a final
    assistant turn), as validate_file checks a file."""
    records = submission.call("q1", "chapter_to_messages", Q1_GRADER_ENTRIES)
    assert isinstance(records, list) and all(isinstance(r, dict) for r in records), "return a list of records"
    with tempfile.TemporaryDirectory() as folder:
        report = data.validate_file(data.write_jsonl(records, Path(folder) / "q1.jsonl"), format="messages")
    assert report.ok and len(report.examples) == len(Q1_GRADER_ENTRIES), report.summary()


def test_q1_any_number_of_entries_and_exchanges(submission):
    """No entries give no records, and an entry with a single exchange gives a system, a user and an assistant
    turn: the function must not assume a fixed number of either."""
    none = submission.call("q1", "chapter_to_messages", [])
    assert none == [], f"no entries must give [], got {none!r}"
    single = [{"system": "You are brief.", "conversations": [{"user": "Hello?", "assistant": "Hello."}]}]
    one = submission.call("q1", "chapter_to_messages", single)
    assert one == q1_expected(single), f"one entry with one exchange gave {json.dumps(one)[:300]}"


# hidden tests of q2, 2 point(s) each
Q2_SYSTEM = ("You are a private detective in 1940s Los Angeles. You speak in short, clipped, cynical sentences, "
             "and you see corruption everywhere.")
Q2_GRADER_CONVERSATIONS = [  # written for the grader: in no dataset the notebook can train on
    [("Do you like trains?", "I like the station. Everybody there is leaving something behind. Usually a debt."),
     ("Where would you go?", "San Diego. Far enough to think, close enough to come back when the rent is due.")],
    [("What do you think of the mayor?", "He shakes a lot of hands. Some of them come away lighter."),
     ("Will he win again?", "He owns the printing press that makes the ballots. Make your own guess.")],
    [("Is it going to rain?", "The sky over the harbor has gone the color of a bad check. Bring a coat."),
     ("Do you like the rain?", "It keeps the crooks indoors. Then they have to look at each other.")],
    [("How do I pick a good apartment?",
      "Visit at night. Listen through the walls. Ask the neighbors what the landlord never fixed."),
     ("What about the rent?", "Get the price in writing. A handshake is worth exactly what the paper isn't.")],
    [("Do you have a favorite song?", "Something slow on a piano, played in an empty bar after closing."),
     ("Why empty?", "Music sounds honest when nobody's there to be impressed.")],
    [("What's the hardest part of your job?",
      "Telling a client the truth she already knew. She pays me to say it out loud."),
     ("And the easiest?", "Finding a liar. They always come back to check their story.")],
]


def q2_conversations():
    return [{"messages": [{"role": "system", "content": Q2_SYSTEM}]
             + [{"role": role, "content": text} for turn in c for role, text in zip(("user", "assistant"), turn)]}
            for c in Q2_GRADER_CONVERSATIONS]


def q2_adapter(submission):
    folder = submission.outputs / "exercise_2_persona" / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (folder / name).is_file(), f"no {name} in OUTPUT_DIR / 'adapter': save the adapter there"
    return folder


def test_q2_a_trained_lora_adapter(submission):
    """The saved adapter must be a LoRA adapter whose B matrices have moved away from zero: LoRA starts with B = 0,
    so an adapter saved before training (or not trained at all) changes nothing."""
    from safetensors.torch import load_file

    folder = q2_adapter(submission)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config.get("peft_type") == "LORA", f"peft_type is {config.get('peft_type')!r}, not LORA"
    b_matrices = [t for name, t in load_file(folder / "adapter_model.safetensors").items() if "lora_B" in name]
    assert b_matrices, "the adapter holds no lora_B weights"
    largest = max(t.abs().max().item() for t in b_matrices)
    assert largest > 1e-4, f"every lora_B weight is still (almost) zero (largest {largest:.1e}): train before saving"


def test_q2_lower_loss_on_unseen_detective_replies(submission):
    """On the bundled tiny model, the adapter must make detective replies the grader wrote (in no dataset) clearly
    less surprising: their loss at most 0.85 times the base model's. Train on the persona data, with the chat
    template and the loss on the replies: training on chats in general does not get there (an adapter trained the
    same way on the Dolly sample reaches 0.88), the detective's own replies do (0.76 to 0.78 over three seeds)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from course_utils.evaluation import reply_loss
    from course_utils.paths import TINY_MODEL_DIR

    folder = q2_adapter(submission)
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    base = AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR, dtype=torch.float32, use_safetensors=True)
    try:
        tuned = PeftModel.from_pretrained(base, folder)
    except Exception as error:
        raise AssertionError(f"the adapter does not load on the tiny model: {type(error).__name__}: {error}")
    conversations = q2_conversations()
    tuned_loss = reply_loss(tuned, tokenizer, conversations)
    with tuned.disable_adapter():
        base_loss = reply_loss(tuned, tokenizer, conversations)
    assert tuned_loss <= 0.85 * base_loss, (f"loss on the grader's detective replies: {tuned_loss:.3f} with the "
                                            f"adapter, {base_loss:.3f} without (needs at most {0.85 * base_loss:.3f})")


# hidden tests of q3, 1 point(s) each
Q3_DETECTIVE = [
    "Breakfast? Two eggs, black coffee, and the morning paper to see which of my clients made the front page.",
    "The bank manager smiled too much. Men who count other people's money always do. I checked his car. "
    "New tires, old debts.",
    "Weather's turning. Fog off the harbor by ten. Good night for honest people to stay home and for the rest "
    "to get busy.",
    "Lawyers. I've known three I'd trust. Two are dead and the third moved to Oregon to grow apples.",
    "Don't sign it. Not tonight, not in this town. Sleep on it, then read the small print. That's where the knife is.",
]
Q3_ASSISTANT = [
    "A balanced breakfast typically includes a source of protein, such as eggs or yogurt, together with whole grains "
    "and some fruit, which together provide energy that lasts through the morning.",
    "When you choose a bank, it is a good idea to compare the interest rates, the monthly fees and the availability "
    "of branches and cash machines in the areas where you live and work.",
    "Tomorrow's forecast calls for morning fog along the coast, clearing by late morning, with sunny skies and mild "
    "temperatures expected for most of the region in the afternoon.",
    "If you need legal advice, you can contact your local bar association, which can refer you to a qualified "
    "attorney who has experience with the kind of issue you are facing.",
    "Before signing a contract, please read every section carefully, make sure you understand the terms and "
    "conditions, and do not hesitate to ask questions about anything that is unclear.",
]


def test_q3_tells_the_detective_from_an_assistant(submission):
    """Every detective text the grader chose must score higher than every plain assistant text on the same topics
    (breakfast, banks, weather, lawyers, contracts)."""
    noir = [submission.call("q3", "persona_score", t) for t in Q3_DETECTIVE]
    plain = [submission.call("q3", "persona_score", t) for t in Q3_ASSISTANT]
    assert all(isinstance(s, (int, float)) for s in noir + plain), "persona_score must return a number"
    assert min(noir) > max(plain), (f"lowest detective score {min(noir):.3f} is not above the highest assistant "
                                    f"score {max(plain):.3f}: detective {noir}, assistant {plain}")


def test_q3_a_rate_not_a_count(submission):
    """A measure of style, not of length: each text repeated twice must score what it scores once, and a text
    without words 0.0."""
    for text in (Q3_DETECTIVE[1], Q3_ASSISTANT[2]):
        once, twice = (submission.call("q3", "persona_score", t) for t in (text, text + "\n\n" + text))
        assert all(isinstance(s, (int, float)) for s in (once, twice)), "persona_score must return a number"
        assert abs(once - twice) <= 1e-6 * max(1.0, abs(once)), f"score {once} once but {twice} repeated"
    assert submission.call("q3", "persona_score", "  -- ... ") == 0.0, "a text without words must score 0.0"
