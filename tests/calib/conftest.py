"""Fixtures for the calibration tests: the fixture model's tokenizer, real text cut into records,
a copy of the model without a chat template, and a second, different tokenizer."""

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tests.conftest import FIXTURE, ROOT

CALIBRATION = ROOT / "calibration"
EMMA = CALIBRATION / "en" / "austen-emma.txt"
CHAT_SAMPLE = CALIBRATION / "chat" / "sample.jsonl"


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(FIXTURE)


@pytest.fixture(scope="session")
def paragraphs() -> list[str]:
    """Real English paragraphs (Emma), one per record, for the record-based sources."""
    text = EMMA.read_text(encoding="utf-8")
    return [p for p in text.split("\n\n") if len(p) > 200]


@pytest.fixture(scope="session")
def chats() -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in CHAT_SAMPLE.read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def model_without_chat_template(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("no-template") / "model"
    shutil.copytree(FIXTURE, dst)
    config_path = dst / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    del config["chat_template"]
    config_path.write_text(json.dumps(config, indent=2))
    return dst


@pytest.fixture(scope="session")
def other_tokenizer_dir(tmp_path_factory) -> Path:
    """A different byte-level BPE tokenizer (800 tokens), trained here on the bundled English text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train([str(p) for p in sorted((CALIBRATION / "en").glob("*.txt"))], trainer)
    out = tmp_path_factory.mktemp("other-tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(out)
    return out
