"""Every checkpoint an organization has: catalogued without a family, with the files
around its weights, and with the lineage its model card declares.

- A model_type no family resizes (t5) imports and goes through list, show, tag, link,
  audit, verify, rm and gc like any other; extract and materialize refuse it in one line.
- Tokenizer files, generation config, chat template and model card are stored as blobs;
  every --out folder carries them, so transformers' AutoTokenizer and pipeline() run on
  it; gc, fsck and verify know the blobs.
- A card's base_model becomes an edge, from a placeholder until the base is imported.
- A Hub repository id (ORG/NAME, hf://ORG/NAME) names the artifact imported last from it,
  wherever a name is taken.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file
from tinymodels import save_tiny

from zoo.errors import (
    ConflictError,
    InvalidCheckpointError,
    UnknownFamilyError,
)

FAMILIES_NAMED = ("bert", "llama", "qwen3", "gemma2", "phi3")  # in every refusal


# --- tiny checkpoints with what real ones carry ---------------------------------------------


def save_t5(folder: Path) -> Path:
    config = transformers.T5Config(
        vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4
    )
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


def wordpiece_tokenizer():
    """A BERT tokenizer over a 40-token vocabulary, built offline with `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    words += ["the", "cat", "sat", "on", "mat", "dog", "##s", ".", ","]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tok.decoder = decoders.WordPiece()
    return transformers.BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )


def bpe_tokenizer():
    """A byte-level BPE tokenizer of 96 tokens (end of text, printable ASCII, space)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = ["<|endoftext|>", *(chr(i) for i in range(33, 127)), "Ġ"]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    fast.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    return fast


CARD = """---
license: apache-2.0
base_model: {base}
tags:
- text
---

# A checkpoint with a card
"""


@pytest.fixture(scope="module")
def bert_with_tokenizer(tmp_path_factory) -> Path:
    folder = save_tiny("bert", tmp_path_factory.mktemp("bert-tok") / "bert-tok")
    wordpiece_tokenizer().save_pretrained(folder)
    (folder / "README.md").write_text(CARD.format(base="org/bert-base"))
    return folder


@pytest.fixture(scope="module")
def llama_with_tokenizer(tmp_path_factory) -> Path:
    folder = save_tiny("llama", tmp_path_factory.mktemp("llama-tok") / "llama-tok")
    bpe_tokenizer().save_pretrained(folder)
    return folder


def one_line_refusal(code: int, err: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# --- any model_type ---------------------------------------------------------------------------


def test_a_model_type_named_as_a_family_that_reads_others_is_refused_naming_them(
    registry, tmp_path, run_cli
):
    """A multimodal Gemma 3 (model_type gemma3) is catalogued; the gemma3 family resizes
    its text model only (gemma3_text), and the refusal says so rather than list gemma3
    among what zoo resizes without a word."""
    from safetensors.torch import save_file

    folder = tmp_path / "gemma3-mm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3"}))
    save_file({"language_model.lm_head.weight": torch.ones(4, 4)}, folder / "model.safetensors")
    registry.import_checkpoint(folder)
    line = one_line_refusal(
        *run_cli("materialize", "gemma3-mm", "--layers", "1", "--hidden", "8")[::2]
    )
    assert "'gemma3' checkpoint" in line, line
    assert "(the gemma3 family reads model_type 'gemma3_text')" in line, line


def test_an_unknown_model_type_is_catalogued_like_any_other(registry, tiny_dir, tmp_path, run_cli):
    t5 = save_t5(tmp_path / "t5-tiny")
    code, out, err = run_cli("import", str(t5), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["family"] is None and info["kind"] == "source" and info["tensor_count"] > 0
    assert [f["name"] for f in info["files"]] == ["generation_config.json"]

    code, out, _ = run_cli("ls")
    assert code == 0 and any(
        line.split()[:3] == ["t5-tiny", "source", "-"] for line in out.splitlines()
    )
    assert run_cli("ls", "--family", "bert")[1].count("t5-tiny") == 0
    code, out, _ = run_cli("show", "t5-tiny")
    assert code == 0 and "model_type t5: catalogued" in out
    assert run_cli("tag", "t5-tiny", "translator")[0] == 0
    bert = registry.import_checkpoint(tiny_dir("bert"))
    assert run_cli("link", "translator", "--from", bert.name, "--relation", "distill")[0] == 0
    assert "--distill--> t5-tiny" in run_cli("lineage", "t5-tiny")[1]

    # Resizing is refused in one line that names the families zoo resizes.
    for args in (
        ("extract", "translator"),
        ("materialize", "t5-tiny", "--layers", "1", "--hidden", "16"),
    ):
        line = one_line_refusal(*run_cli(*args)[::2])
        assert "'t5' checkpoint" in line and all(f in line for f in FAMILIES_NAMED), line
    with pytest.raises(UnknownFamilyError):
        registry.extract("t5-tiny")

    # Audited by content, verified, collected.
    assert registry.audit(t5).status == "known"
    assert registry.audit(t5 / "model.safetensors").artifact.name == "t5-tiny"
    assert registry.verify("t5-tiny").ok
    digests = {t.digest for t in registry.show("t5-tiny").tensors} - {
        t.digest for t in bert.tensors
    }
    assert run_cli("rm", "t5-tiny")[0] == 0
    report = registry.gc(grace="0s")
    assert "t5-tiny" in report.hard_deleted
    assert digests <= {s.name for s in report.swept}
    assert registry.fsck().ok and registry.audit(t5).status == "unknown"


def test_the_line_an_import_prints_counts_one_kept_file_as_one_file(tmp_path, run_cli):
    t5 = save_t5(tmp_path / "t5-tiny")  # config.json aside, one file kept: its generation config
    code, out, err = run_cli("import", str(t5))
    assert code == 0, err
    assert " tensors, 1 file  " in out, out


def test_a_config_without_a_model_type_is_catalogued_too(registry, tiny_dir, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_dir("bert"), folder)
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    info = registry.import_checkpoint(folder)
    assert info.family is None and info.config == config
    with pytest.raises(UnknownFamilyError, match="custom is a checkpoint without a model_type"):
        registry.materialize("custom", layers=2, hidden=16)


def test_broken_files_of_an_unknown_type_are_still_refused(registry, tmp_path):
    t5 = save_t5(tmp_path / "t5")
    weights = t5 / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(InvalidCheckpointError):
        registry.import_checkpoint(t5)
    (t5 / "config.json").write_text("{not json")
    with pytest.raises(InvalidCheckpointError, match="not valid JSON"):
        registry.import_checkpoint(t5)
    assert registry.list() == [] and not list(registry.store.digests())


@pytest.mark.parametrize("weights", ["weights.safetensors", "a.pt"])
def test_weights_under_another_name_are_refused_with_advice_an_import_can_follow(
    registry, tiny_dir, tmp_path, run_cli, weights
):
    """A folder whose weights save_pretrained did not name (two pickles, or one
    .safetensors file that may be any model's) is refused, exit 2, naming the rename that
    imports it: an import takes a folder, never the weights file alone."""
    folder = tmp_path / "renamed"
    shutil.copytree(tiny_dir("bert"), folder)
    expected = registry.import_checkpoint(folder).content_hash
    if weights.endswith(".pt"):
        tensors = load_file(folder / "model.safetensors")
        for name in ("a.pt", "b.pt"):
            torch.save(tensors, folder / name)
        (folder / "model.safetensors").unlink()
        standard = "pytorch_model.bin"
    else:
        (folder / "model.safetensors").rename(folder / weights)
        standard = "model.safetensors"
    code, _, err = run_cli("import", str(folder), "--convert-bin")
    assert code == 2 and f"rename the model's weights {standard} to import" in err, err
    assert run_cli("import", str(folder / weights), "--convert-bin")[0] == 2
    (folder / weights).rename(folder / standard)
    code, out, err = run_cli("import", str(folder), "--convert-bin", "--json")
    assert code == 0 and json.loads(out)["content_hash"] == expected, err


# --- the files around the weights --------------------------------------------------------------


def test_a_derived_checkpoint_imported_back_under_a_removed_source_exports_after_gc(
    registry, bert_with_tokenizer, tmp_path, run_cli
):
    """A derived checkpoint removed with its source (`rm --cascade`) and brought back by an
    import of its --out folder is kept under the removed source: gc keeps the source's
    blobs and files it is re-derived from, and `export` and `rederive --out` write it
    (nothing is recorded, so the removed parent refuses nothing), tokenizer included."""
    registry.import_checkpoint(bert_with_tokenizer, name="src")
    out = tmp_path / "small"
    made = registry.materialize("src", layers=1, hidden=16, method="dwt", out=out)
    registry.rm("src", cascade=True)
    back = registry.import_checkpoint(out)
    assert (back.kind, back.id) == ("derived", made.artifact.id)
    registry.gc(grace="0s")
    assert registry.fsck().ok
    code, _, err = run_cli("export", back.name, "--out", str(tmp_path / "exported"))
    assert code == 0, err
    code, text, err = run_cli("rederive", back.name, "--out", str(tmp_path / "again"))
    assert code == 0 and "re-derived bit for bit" in text, err
    for folder in ("exported", "again"):
        written = tmp_path / folder
        assert registry.audit(written).artifact.name == back.name
        for name in ("tokenizer.json", "tokenizer_config.json"):
            assert (written / name).read_bytes() == (bert_with_tokenizer / name).read_bytes()
    assert [a.name for a in registry.list(include_deleted=True) if a.deleted] == ["src"]


def test_an_import_under_a_removed_source_during_a_gc_keeps_what_it_is_derived_from(
    registry, tiny_dir, tmp_path, monkeypatch
):
    """A derived checkpoint brought back by an import while gc sweeps (after gc marked
    what is kept) keeps the removed source's blobs it is derived again from: the import
    refreshes them as a writer refreshes the blobs it reuses."""
    import time

    import zoo
    from zoo.api import maintenance

    registry.import_checkpoint(tiny_dir("bert"), name="src")
    out = tmp_path / "small"
    made = registry.materialize("src", layers=1, hidden=16, out=out)
    registry.rm("src", cascade=True)
    old = time.time() - 7200
    for blob in (tmp_path / "blobs").rglob("*"):
        if blob.is_file():
            os.utime(blob, (old, old))
    mark, imported = maintenance._mark, []

    def mark_then_import(session):
        marked = mark(session)
        if not imported:  # another user's import, once gc has marked
            other = zoo.connect()
            imported.append(other.import_checkpoint(out))
            other.close()
        return marked

    monkeypatch.setattr(maintenance, "_mark", mark_then_import)
    report = registry.gc(grace="1h")
    assert imported[0].id == made.artifact.id and not report.swept
    monkeypatch.undo()
    assert registry.fsck().ok
    registry.export(made.artifact.name, out=tmp_path / "exported")


def test_tokenizer_and_card_go_with_every_out_folder(
    registry, bert_with_tokenizer, tmp_path, run_cli
):
    src = registry.import_checkpoint(bert_with_tokenizer)
    files = {f.name: f for f in src.files}
    assert set(files) == {"tokenizer.json", "tokenizer_config.json", "README.md"}
    assert files["README.md"].role == "card" and files["tokenizer.json"].role == "tokenizer"
    for name, f in files.items():
        data = (bert_with_tokenizer / name).read_bytes()
        assert f.digest == hashlib.sha256(data).hexdigest() and f.nbytes == len(data)
        assert registry.store.get(f.digest) == data
        assert src.imports[0].files[name] == f.digest
    code, out, _ = run_cli("show", src.name)
    assert code == 0 and "tokenizer.json  tokenizer" in out and "README.md  card" in out

    lg = registry.extract(src.name, method="dwt", wavelet="haar")
    small = registry.materialize(lg.name, layers=2, hidden=16, out=tmp_path / "small")
    source_tok = transformers.AutoTokenizer.from_pretrained(bert_with_tokenizer)
    tok = transformers.AutoTokenizer.from_pretrained(small.out)
    text = "the cat sat on the mat."
    assert tok(text)["input_ids"] == source_tok(text)["input_ids"]
    fill = transformers.pipeline("fill-mask", model=str(small.out), device="cpu")
    guesses = fill("the [MASK] sat on the mat.")
    # An untrained initialization guesses anything; the tokenizer round trip is real.
    assert len(guesses) == 5 and all("sat on the mat." in g["sequence"] for g in guesses)

    card = (small.out / "README.md").read_text()
    # bert-tok came from a folder, not the Hub: named in the text, not as a base_model.
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: transformers\n")
    assert "base_model" not in card and "derived from `bert-tok` with dwt" in card
    assert "initialization" in card and "not a trained model" in card
    assert f"`{lg.name}`" in card and "with dwt (haar)" in card
    assert "org/bert-base" not in card  # the source's own base is not this model's

    # A re-derived folder carries them too.
    again = registry.rederive(small.artifact.name, out=tmp_path / "again")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (again.out / name).read_bytes() == (bert_with_tokenizer / name).read_bytes()
    assert (again.out / "README.md").read_text() == card


def test_a_base_model_saved_on_its_own_carries_its_task_models_tokenizer_and_license(
    registry, bert_with_tokenizer, tmp_path
):
    """AutoModel's save of a registered task model holds no tokenizer, and its embedding is
    the task model's byte for byte: what is derived from it (imported as a backbone of the
    task model) carries the task model's tokenizer, and its card the license."""
    registry.import_checkpoint(bert_with_tokenizer)
    bare = tmp_path / "bare"
    transformers.AutoModel.from_pretrained(bert_with_tokenizer).save_pretrained(bare)
    assert not (bare / "tokenizer.json").exists()
    base = registry.import_checkpoint(bare)
    assert base.files == ()
    out = registry.materialize(base.name, layers=2, hidden=16, out=tmp_path / "small").out
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (bert_with_tokenizer / name).read_bytes()
    assert (out / "README.md").read_text().startswith("---\nlicense: apache-2.0\n")
    source_tok = transformers.AutoTokenizer.from_pretrained(bert_with_tokenizer)
    text = "the cat sat on the mat."
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok(text)["input_ids"] == source_tok(text)["input_ids"]


def test_a_decoder_folder_generates_text_with_its_chat_template(
    registry, llama_with_tokenizer, tmp_path
):
    src = registry.import_checkpoint(llama_with_tokenizer)
    assert {f.role for f in src.files} == {"tokenizer", "generation", "chat_template"}
    m = registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "out")
    for name in ("generation_config.json", "chat_template.jinja", "tokenizer.json"):
        assert (m.out / name).read_bytes() == (llama_with_tokenizer / name).read_bytes()
    generate = transformers.pipeline("text-generation", model=str(m.out), device="cpu")
    text = generate("abc", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert text.startswith("abc") and len(text) > 3
    tok = transformers.AutoTokenizer.from_pretrained(m.out)
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat == "<user>hi"
    card = (m.out / "README.md").read_text()
    # The source has no card: none to inherit a license from, and the card says so.
    assert "license" not in card.lower() and "registered without a model card" in card


def test_importing_a_weights_only_copy_of_a_derived_checkpoint_keeps_its_tokenizer(
    registry, llama_with_tokenizer, tmp_path
):
    """A derived checkpoint has its source's tokenizer; a save_pretrained copy of it (the
    model alone: config, weights, generation config) imported on it brings a generation
    config only, and what is made from it afterwards still carries the tokenizer."""
    src = registry.import_checkpoint(llama_with_tokenizer)
    small = registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "small")
    copy = tmp_path / "copy"
    transformers.AutoModelForCausalLM.from_pretrained(small.out).save_pretrained(copy)
    assert not (copy / "tokenizer.json").exists()
    assert registry.import_checkpoint(copy).name == small.artifact.name
    out = registry.materialize(small.artifact.name, layers=2, hidden=32, out=tmp_path / "out").out
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (llama_with_tokenizer / name).read_bytes()
    text = "abc def"
    assert (
        transformers.AutoTokenizer.from_pretrained(out)(text)["input_ids"]
        == transformers.AutoTokenizer.from_pretrained(llama_with_tokenizer)(text)["input_ids"]
    )


def tokenizer_vocabulary_files() -> dict[str, str]:
    """File name -> the transformers tokenizer module that reads it: every
    ``vocab_files_names`` (or ``VOCAB_FILES_NAMES``) written out in transformers' own
    tokenizer modules, read from their source (many import only with sentencepiece)."""
    import ast

    root = Path(transformers.__file__).parent
    names: dict[str, str] = {}
    for path in sorted(root.glob("models/*/tokenization_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Dict):
                continue
            targets = {t.id for t in node.targets if isinstance(t, ast.Name)}
            if targets & {"VOCAB_FILES_NAMES", "vocab_files_names"}:
                for value in node.value.values:
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        names.setdefault(value.value, path.stem)
    return names


def test_every_vocabulary_a_transformers_tokenizer_reads_is_kept():
    """A tokenizer saved without tokenizer.json (DeBERTa-v3's spm.model, PhoBERT's
    bpe.codes, Marian's source.spm) loads only from its own vocabulary files."""
    from zoo.checkpoint.side_files import SIDE_FILES, is_side_file

    names = tokenizer_vocabulary_files()
    assert {"vocab.txt", "spm.model", "bpe.codes", "source.spm"} <= set(names)
    assert {n: m for n, m in names.items() if not is_side_file(n)} == {}
    assert {SIDE_FILES[n] for n in names if n in SIDE_FILES} == {"tokenizer"}
    # The names transformers' tokenizers load a tiktoken vocabulary by.
    from transformers import tokenization_utils_tokenizers as fast

    assert is_side_file(fast.TIKTOKEN_VOCAB_FILE) and is_side_file(fast.TIKTOKEN_LEGACY_NAME)


def test_a_tokenizer_without_tokenizer_json_goes_with_every_output(registry, tmp_path):
    """PhoBERT is a RoBERTa whose tokenizer is a vocab.txt and fastBPE's bpe.codes: a
    folder without bpe.codes does not load it."""
    folder = save_tiny("roberta", tmp_path / "phobert")
    words = ["the", "cat", "sat", "on", "m@@", "at", "c@@", "a@@", "t"]
    (tmp_path / "vocab.txt").write_text("".join(f"{w} 1\n" for w in words))
    (tmp_path / "bpe.codes").write_text("#version: 0.2\nm a\nma t</w>\nc a\nca t</w>\n")
    transformers.PhobertTokenizer(
        vocab_file=str(tmp_path / "vocab.txt"), merges_file=str(tmp_path / "bpe.codes")
    ).save_pretrained(folder)
    assert (folder / "bpe.codes").is_file() and not (folder / "tokenizer.json").exists()
    src = registry.import_checkpoint(folder)
    assert {"vocab.txt", "bpe.codes"} <= {f.name for f in src.files if f.role == "tokenizer"}
    small = registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "small").out
    exported = registry.export(src.name, out=tmp_path / "exported")
    text = "the cat sat on mat"
    expected = transformers.AutoTokenizer.from_pretrained(folder)(text)["input_ids"]
    for out in (small, exported):
        assert (out / "bpe.codes").read_bytes() == (folder / "bpe.codes").read_bytes()
        assert transformers.AutoTokenizer.from_pretrained(out)(text)["input_ids"] == expected


def test_a_decoder_folder_keeps_its_named_chat_templates(registry, tmp_path):
    """A tokenizer with named chat templates (tool_use beside the default) is saved by
    transformers as additional_chat_templates/NAME.jinja: an output's tokenizer loads
    every one of them, as the source's does."""
    from zoo.checkpoint.side_files import left_behind

    folder = save_tiny("llama", tmp_path / "src")
    tok = bpe_tokenizer()
    tok.chat_template = {"default": "{{ messages[0]['content'] }}", "tool_use": "T {{ 1 }}"}
    tok.save_pretrained(folder)
    assert (folder / "additional_chat_templates" / "tool_use.jinja").is_file()
    (folder / "additional_chat_templates" / "notes.txt").write_text("not a template")
    assert left_behind(folder) == ["additional_chat_templates/notes.txt"]
    src = registry.import_checkpoint(folder)
    assert "additional_chat_templates/tool_use.jinja" in {f.name for f in src.files}
    out = registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "out").out
    expected = transformers.AutoTokenizer.from_pretrained(folder).chat_template
    assert set(expected) == {"default", "tool_use"}
    assert transformers.AutoTokenizer.from_pretrained(out).chat_template == expected


def test_file_blobs_are_kept_checked_and_collected(registry, bert_with_tokenizer, tmp_path):
    src = registry.import_checkpoint(bert_with_tokenizer)
    tokenizer = next(f for f in src.files if f.name == "tokenizer.json")
    assert registry.gc(grace="0s").swept == ()  # referenced: never swept
    assert registry.verify(src.name).checked == len({t.digest for t in src.tensors}) + 3

    blob = next(registry.store.root.rglob(tokenizer.digest))
    data = blob.read_bytes()
    blob.write_bytes(data[:-1] + b"!")
    report = registry.verify(src.name)
    assert [(p.digest, p.problem) for p in report.problems] == [(tokenizer.digest, "corrupt")]
    blob.unlink()
    report = registry.fsck()
    assert [(p.digest, p.problem, p.artifacts) for p in report.problems] == [
        (tokenizer.digest, "missing", (src.name,))
    ]
    with pytest.raises(FileNotFoundError):
        registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    registry.import_checkpoint(bert_with_tokenizer)  # brings the blob back
    assert registry.fsck().ok and registry.verify().ok

    registry.rm(src.name, cascade=True)  # with the virtual checkpoint recorded above
    swept = {s.name for s in registry.gc(grace="0s").swept}
    assert {f.digest for f in src.files} <= swept


def test_a_later_import_with_files_replaces_them(registry, tiny_dir, bert_with_tokenizer, tmp_path):
    bare = registry.import_checkpoint(tiny_dir("bert"))
    assert bare.files == ()
    again = registry.import_checkpoint(bert_with_tokenizer)
    assert again.id == bare.id and len(again.files) == 3
    weights_only = tmp_path / "weights-only"
    shutil.copytree(tiny_dir("bert"), weights_only)
    assert len(registry.import_checkpoint(weights_only).files) == 3  # none brought: kept


def test_a_later_import_replaces_only_the_roles_of_the_files_it_brings(
    registry, bert_with_tokenizer, tmp_path
):
    """A save_pretrained copy of the same weights brings generation_config.json alone,
    and must not take the tokenizer and the licensed card away (an export would lack
    both): each role is the newest import's that brings it, the rest stay. The import's
    own record lists what its folder held, also when the same folder is imported again."""
    first = registry.import_checkpoint(bert_with_tokenizer)
    roles = {f.role for f in first.files}
    assert {"tokenizer", "card"} <= roles and "generation" not in roles
    copy = tmp_path / "resaved"
    shutil.copytree(bert_with_tokenizer, copy)
    for f in copy.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            f.unlink()
    (copy / "generation_config.json").write_text('{"max_length": 7}')
    again = registry.import_checkpoint(copy, name="resaved")
    assert again.id == first.id and again.replaced_files == ()  # a role of its own
    by_name = {f.name: f.digest for f in again.files}
    assert {f.name: f.digest for f in first.files}.items() <= by_name.items()
    assert "generation_config.json" in by_name
    (copy / "README.md").write_text("---\nlicense: mit\n---\n# corrected\n")
    third = registry.import_checkpoint(copy)
    card = next(f for f in third.files if f.role == "card")
    assert third.replaced_files == tuple(f for f in first.files if f.role == "card")
    assert card.digest != next(f for f in first.files if f.role == "card").digest
    assert {f.name for f in third.files} == set(by_name)  # the tokenizer is still there
    records = {i.origin: i for i in registry.show(first.name).imports}
    held = next(r for o, r in records.items() if o.endswith("resaved"))
    assert "README.md" in held.files  # the folder's second import held a card


def test_a_tokenizer_imported_again_brings_its_own_chat_template(registry, tmp_path):
    """A tokenizer saved with its chat template inside tokenizer_config.json (as older
    transformers save it), imported on weights whose stored tokenizer had it in
    chat_template.jinja: every output's tokenizer has the template the newest import
    brought, as that folder's own tokenizer has, not the stored file's."""
    first = save_tiny("llama", tmp_path / "first")
    tok = bpe_tokenizer()
    tok.chat_template = "OLD {{ messages[0]['content'] }}"
    tok.save_pretrained(first)
    assert (first / "chat_template.jinja").is_file()
    corrected = tmp_path / "corrected"
    shutil.copytree(first, corrected)
    (corrected / "chat_template.jinja").unlink()
    config = json.loads((corrected / "tokenizer_config.json").read_text())
    config["chat_template"] = "NEW {{ messages[0]['content'] }}"
    (corrected / "tokenizer_config.json").write_text(json.dumps(config))
    src = registry.import_checkpoint(first)
    again = registry.import_checkpoint(corrected)
    assert again.id == src.id
    assert "chat_template.jinja" in {f.name for f in again.replaced_files}
    assert "chat_template.jinja" not in {f.name for f in again.files}
    out = registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "out").out
    expected = transformers.AutoTokenizer.from_pretrained(corrected).chat_template
    assert expected.startswith("NEW")
    assert transformers.AutoTokenizer.from_pretrained(out).chat_template == expected
    # A copy without a tokenizer (a save_pretrained of the model alone) keeps both.
    weights = tmp_path / "weights"
    shutil.copytree(first, weights)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (weights / name).unlink()
    third = registry.import_checkpoint(weights)
    assert {f.name for f in third.files} == {f.name for f in again.files}


def folder_with(bert_with_tokenizer, folder: Path, card: str, files=None) -> Path:
    """A copy of the tiny BERT with this card and these files (name -> text)."""
    shutil.copytree(bert_with_tokenizer, folder)
    (folder / "README.md").write_text(card)
    for name, text in (files or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def front_matter(folder: Path) -> dict:
    from zoo.checkpoint.side_files import card_metadata

    return card_metadata((folder / "README.md").read_text())


LLAMA_CARD = "---\nlicense: other\nlicense_name: llama3.2\nlicense_link: LICENSE\n---\n# L\n"


def test_license_files_go_with_every_output_the_card_links(
    registry, bert_with_tokenizer, tmp_path, run_cli
):
    """A license such as Llama's requires its text and use policy to travel with the
    weights: LICENSE and USE_POLICY.md are kept (role license) and carried, bit for bit,
    by an export and a derived folder, whose card's license_link names a file it holds."""
    folder = folder_with(
        bert_with_tokenizer,
        tmp_path / "licensed",
        LLAMA_CARD,
        {
            "LICENSE": "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\n",
            "USE_POLICY.md": "# Acceptable Use Policy\n",
            "NOTICE.txt": "notice\n",
        },
    )
    code, out, err = run_cli("import", str(folder), "--json")
    assert code == 0 and "note:" not in err, err
    roles = {f["name"]: f["role"] for f in json.loads(out)["files"]}
    assert {n: r for n, r in roles.items() if r == "license"} == {
        "LICENSE": "license",
        "USE_POLICY.md": "license",
        "NOTICE.txt": "license",
    }
    exported = registry.export("licensed", out=tmp_path / "exported")
    small = registry.materialize("licensed", layers=2, hidden=16, out=tmp_path / "small").out
    for out_dir in (exported, small):
        for name in ("LICENSE", "USE_POLICY.md", "NOTICE.txt"):
            assert (out_dir / name).read_bytes() == (folder / name).read_bytes(), out_dir
    meta = front_matter(small)
    assert (meta["license"], meta["license_name"], meta["license_link"]) == (
        "other",
        "llama3.2",
        "LICENSE",
    )
    assert (small / meta["license_link"]).is_file()
    assert "License: `other`, inherited from `licensed`" in (small / "README.md").read_text()


def test_a_derived_card_renders_a_list_of_licenses_and_a_card_without_one(
    registry, bert_with_tokenizer, tmp_path
):
    """Several licenses read as a list, not Python's repr of one; a link to a file the
    folder lacks is not written; a source whose card states its terms only in prose gets
    a card that says those terms apply."""
    folder_with(
        bert_with_tokenizer,
        tmp_path / "dual",
        "---\nlicense:\n- apache-2.0\n- cc-by-4.0\nlicense_link: terms/LICENSE\n---\n",
    )
    registry.import_checkpoint(tmp_path / "dual")
    out = registry.materialize("dual", layers=2, hidden=16, out=tmp_path / "dual-small").out
    card = (out / "README.md").read_text()
    assert front_matter(out)["license"] == ["apache-2.0", "cc-by-4.0"]
    assert "license_link" not in front_matter(out)
    assert "License: `apache-2.0`, `cc-by-4.0`, inherited from `dual`" in card
    assert "links the license as `terms/LICENSE`, a file its folder did not bring" in card
    assert "[" not in card.split("---", 2)[2]

    # The same weights with a card in prose only: it becomes the card in effect.
    folder_with(bert_with_tokenizer, tmp_path / "prose", "# P\n\nUse it only for research.\n")
    registry.import_checkpoint(tmp_path / "prose")
    out = registry.materialize("dual", layers=2, hidden=16, out=tmp_path / "prose-small").out
    assert "license" not in front_matter(out)
    assert (
        "`dual`'s own model card states no license in its front matter; the terms it states "
        "for its weights apply to these weights too: the weights derive from its weights."
    ) in (out / "README.md").read_text()


CUSTOM_CODE = {
    "configuration_custom.py": (
        "from transformers import BertConfig\n\n\n"
        "class CustomConfig(BertConfig):\n    model_type = 'bert'\n"
    ),
    "modeling_custom.py": (
        "from transformers import BertModel\n\n"
        "from .configuration_custom import CustomConfig\n"
        "from .custom_layers import SCALE\n\n\n"
        "class CustomModel(BertModel):\n    config_class = CustomConfig\n"
    ),
    "custom_layers.py": "SCALE = 1.0\n",  # imported by modeling_custom.py only
}
AUTO_MAP = {
    "AutoConfig": "configuration_custom.CustomConfig",
    "AutoModel": "modeling_custom.CustomModel",
}


def with_code(tiny_dir, folder: Path, seed: int, code: dict[str, str]) -> Path:
    shutil.copytree(tiny_dir("bert", seed=seed), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": AUTO_MAP}))
    for name, text in code.items():
        (folder / name).write_text(text)
    return folder


def test_the_code_an_auto_map_names_goes_with_every_output(registry, tiny_dir, tmp_path, run_cli):
    """The modules a config's auto_map names, and those they import relatively, are kept
    (role code) and carried: an export loads with trust_remote_code as the source does,
    to the same outputs, and so does a resized folder. A module nothing names is not kept,
    and the import says so."""
    folder = with_code(
        tiny_dir, tmp_path / "custom", 0, {**CUSTOM_CODE, "train.py": "print('train')\n"}
    )
    code, out, err = run_cli("import", str(folder), "--json")
    assert code == 0, err
    roles = {f["name"]: f["role"] for f in json.loads(out)["files"]}
    assert roles == dict.fromkeys(sorted(CUSTOM_CODE), "code")
    assert json.loads(out)["not_kept"] == [{"name": "train.py", "why": None}]

    exported = registry.export("custom", out=tmp_path / "exported")
    small = registry.materialize("custom", layers=2, hidden=16, out=tmp_path / "small").out
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    loaded = {}
    for where in (folder, exported, small):
        for name, text in CUSTOM_CODE.items():
            assert (where / name).read_text() == text
        model = transformers.AutoModel.from_pretrained(where, trust_remote_code=True).eval()
        assert type(model).__name__ == "CustomModel", where
        with torch.no_grad():
            loaded[where] = model(input_ids=ids).last_hidden_state
    assert torch.equal(loaded[exported], loaded[folder])
    assert loaded[small].shape[-1] == 16


def test_an_import_that_replaces_stored_code_or_tokenizer_says_so(tiny_dir, tmp_path, run_cli):
    """The same weights imported with other code (under trust_remote_code, the code is the
    model) or another tokenizer replace what was stored for those roles, and every folder
    zoo writes from them carries the new files: the import names what it replaced, on
    stderr and as replaced_files in --json; the same folder imported again replaces
    nothing."""
    folder = with_code(tiny_dir, tmp_path / "custom", 0, CUSTOM_CODE)
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\nzoo\n")
    code, out, err = run_cli("import", str(folder), "--json")
    assert code == 0, err
    assert json.loads(out)["replaced_files"] == [] and "replaced" not in err

    patched = tmp_path / "patched"
    shutil.copytree(folder, patched)
    (patched / "modeling_custom.py").write_text(
        CUSTOM_CODE["modeling_custom.py"] + "\nPATCHED = True\n"
    )
    (patched / "vocab.txt").unlink()
    code, out, err = run_cli("import", str(patched), "--json")
    assert code == 0, err
    replaced = json.loads(out)["replaced_files"]
    assert [(f["name"], f["role"]) for f in replaced] == [("modeling_custom.py", "code")]
    assert "replaced custom's stored modeling_custom.py (code) by this folder's" in err
    assert "vocab.txt" in {f["name"] for f in json.loads(out)["files"]}  # no tokenizer brought

    code, out, err = run_cli("import", str(patched), "--json")
    assert code == 0 and json.loads(out)["replaced_files"] == [] and "replaced" not in err


def test_an_output_that_would_lack_the_code_its_auto_map_names_is_refused(
    registry, tiny_dir, tmp_path, run_cli
):
    """A checkpoint registered without the code its auto_map names (a folder that did not
    hold it) gets no folder whose config names missing files: the export and materialize
    are refused in one line, with nothing written, until an import brings the code."""
    folder = with_code(tiny_dir, tmp_path / "codeless", 1, {})
    registry.import_checkpoint(folder)
    outs = tmp_path / "outs"
    for args in (
        ("export", "codeless", "--out", str(outs / "exported")),
        ("materialize", "codeless", "--layers", "2", "--hidden", "16", "--out", str(outs / "m")),
    ):
        code, out, err = run_cli(*args)
        assert (code, out) == (2, ""), err
        assert err == (
            "zoo: error: codeless's config.json names code in its auto_map that zoo does not "
            "hold (configuration_custom.py, modeling_custom.py), so the folder would not load "
            "with trust_remote_code; import its folder or repository again with that code "
            "(zoo keeps it), then write the folder.\n"
        )
    assert not outs.exists() or list(outs.iterdir()) == []
    for name, text in CUSTOM_CODE.items():
        (folder / name).write_text(text)
    registry.import_checkpoint(folder)
    exported = registry.export("codeless", out=outs / "exported")
    model = transformers.AutoModel.from_pretrained(exported, trust_remote_code=True)
    assert type(model).__name__ == "CustomModel"


def sentence_transformers_files(width: int) -> dict[str, str]:
    """What sentence-transformers saves beside the model (all-MiniLM-L6-v2's layout)."""
    kinds = ("Transformer", "Pooling", "Normalize")
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(zip(("", "1_Pooling", "2_Normalize"), kinds, strict=True))
    ]
    pooling = {
        "word_embedding_dimension": width,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
    }
    return {
        "modules.json": json.dumps(modules, indent=2),
        "sentence_bert_config.json": '{\n  "max_seq_length": 256,\n  "do_lower_case": false\n}',
        "config_sentence_transformers.json": '{"__version__": {"sentence_transformers": "2.0.0"}}',
        "1_Pooling/config.json": json.dumps(pooling, indent=2),
    }


def test_a_sentence_transformers_pipeline_goes_with_every_output(
    registry, bert_with_tokenizer, tmp_path, run_cli
):
    """modules.json, the pipeline's settings and its modules' folders are kept (role
    sentence_transformers) and carried bit for bit by an export and a same-size folder,
    so SentenceTransformer builds the source's pipeline from them; a narrower folder's
    pooling module is told its width. A replaced output's module folder is zoo's only
    while nobody added to it."""
    st = sentence_transformers_files(32)
    folder = folder_with(bert_with_tokenizer, tmp_path / "st", CARD.format(base="org/x"), st)
    code, out, err = run_cli("import", str(folder), "--json")
    assert code == 0 and "note:" not in err, err
    roles = {f["name"]: f["role"] for f in json.loads(out)["files"]}
    assert {n: roles.get(n) for n in st} == dict.fromkeys(st, "sentence_transformers")

    exported = registry.export("st", out=tmp_path / "exported")
    same = registry.materialize("st", layers=4, hidden=32, out=tmp_path / "same").out
    small = registry.materialize("st", layers=2, hidden=16, out=tmp_path / "small").out
    for out_dir in (exported, same):
        for name in st:
            assert (out_dir / name).read_bytes() == (folder / name).read_bytes(), (out_dir, name)
    for name in st:
        if name != "1_Pooling/config.json":
            assert (small / name).read_bytes() == (folder / name).read_bytes(), name
    pooling = json.loads((small / "1_Pooling" / "config.json").read_text())
    assert pooling == {**json.loads(st["1_Pooling/config.json"]), "word_embedding_dimension": 16}
    # Its card names the library that loads the pipeline it carries.
    assert "\nlibrary_name: sentence-transformers\n" in (small / "README.md").read_text()
    assert (
        "set to this model's hidden size: 1_Pooling/config.json"
        in (small / "README.md").read_text()
    )
    assert registry.audit(exported).status == "known"
    # A source registered without a card is exported with one naming that library too.
    bare = save_tiny("bert", tmp_path / "st-bare", seed=1)
    for name, text in st.items():
        (bare / name).parent.mkdir(parents=True, exist_ok=True)
        (bare / name).write_text(text)
    registry.import_checkpoint(bare, name="st-bare")
    card = (registry.export("st-bare", out=tmp_path / "bare-out") / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sentence-transformers\n")

    # Replaced with --force, module folder and all; not once a file was added to it.
    assert registry.export("st", out=exported, force=True) == exported
    (exported / "1_Pooling" / "mine.txt").write_text("not zoo's")
    code, _, err = run_cli("export", "st", "--out", str(exported), "--force")
    assert code != 0 and "holds files zoo did not write (1_Pooling/mine.txt)" in err, err
    assert (exported / "1_Pooling" / "mine.txt").read_text() == "not zoo's"


def _dense_pipeline(bert: Path, saved: Path) -> Path:
    """A 32-wide BERT's pipeline with a Dense module to 24 (LaBSE's, distiluse's: a
    projection of the pooled embedding), saved by sentence-transformers itself."""
    import sentence_transformers as st

    try:  # where sentence-transformers 6 has its modules; 5 and before: models
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:
        from sentence_transformers import models

    torch.manual_seed(0)
    modules = [
        models.Transformer(str(bert)),
        models.Pooling(32, pooling_mode="mean"),
        models.Dense(32, 24, activation_function=torch.nn.Tanh()),
        models.Normalize(),
    ]
    st.SentenceTransformer(modules=modules, device="cpu").save(str(saved))
    return saved


def test_a_sentence_transformers_dense_module_is_left_out_where_the_width_changes(
    registry, bert_with_tokenizer, tmp_path
):
    """A pipeline with a Dense module (LaBSE's, distiluse's: a projection of the pooled
    embedding) saved by sentence-transformers itself: at the source's width the output
    carries it and encodes as the source does; at another width its weights, which take
    the source's width, cannot be kept, so the module is left out of modules.json, files
    and all, and the card says so: sentence-transformers loads the narrower folder and
    encodes at its width (with the module it failed on a shape mismatch)."""
    import sentence_transformers as st

    saved = _dense_pipeline(bert_with_tokenizer, tmp_path / "st-dense")
    dense = next(p.parent.name for p in saved.glob("*/config.json") if "Dense" in p.parent.name)
    registry.import_checkpoint(saved, name="labse-like")
    texts = ["a short sentence", "another one, a little longer than the first"]
    want = st.SentenceTransformer(str(saved), device="cpu").encode(texts)

    same = registry.materialize("labse-like", layers=4, hidden=32, out=tmp_path / "same").out
    assert (same / dense / "config.json").is_file()
    got = st.SentenceTransformer(str(same), device="cpu").encode(texts)
    assert got.shape == (2, 24) and np.allclose(got, want, atol=1e-6)

    small = registry.materialize("labse-like", layers=2, hidden=16, out=tmp_path / "small").out
    assert not (small / dense).exists()
    listed = [m["path"] for m in json.loads((small / "modules.json").read_text())]
    assert dense not in listed and len(listed) == 3
    narrow = st.SentenceTransformer(str(small), device="cpu").encode(texts)
    assert narrow.shape == (2, 16) and np.allclose(np.linalg.norm(narrow, axis=1), 1)
    card = (small / "README.md").read_text()
    assert f"left out: {dense}/config.json" in card and "32-wide embedding" in card


def test_a_size_made_from_a_derived_checkpoint_fits_the_sources_pipeline_to_its_width(
    registry, bert_with_tokenizer, tmp_path
):
    """A checkpoint derived from a derived one carries the source's pipeline, written for
    the source's width (32), not its parent's (16): the pooling width follows the output
    and the Dense module, which takes 32, is left out also where the parent's width is
    kept, so SentenceTransformer loads each folder and reports the width it encodes at
    (it reported 32 for an 8-wide embedding, and failed on the Dense module's shape)."""
    import sentence_transformers as st

    saved = _dense_pipeline(bert_with_tokenizer, tmp_path / "st-dense")
    registry.import_checkpoint(saved, name="dense-source")
    parent = registry.materialize("dense-source", layers=2, hidden=16).artifact.name
    texts = ["the cat sat on the mat", "dogs"]
    for layers, hidden in ((1, 16), (1, 8)):
        out = tmp_path / f"{layers}x{hidden}"
        made = registry.materialize(parent, layers=layers, hidden=hidden, out=out)
        model = st.SentenceTransformer(str(out), device="cpu")
        got = model.encode(texts)
        assert got.shape == (2, hidden) and np.allclose(np.linalg.norm(got, axis=1), 1)
        assert model.get_embedding_dimension() == hidden
        assert len(json.loads((out / "modules.json").read_text())) == 3
        assert "take a 32-wide embedding" in (out / "README.md").read_text()
        # Its export (re-derived) writes the same pipeline.
        exported = registry.export(made.artifact.name, out=tmp_path / f"export-{hidden}")
        for name in ("modules.json", "1_Pooling/config.json"):
            assert (exported / name).read_bytes() == (out / name).read_bytes(), name


@pytest.mark.parametrize("key", ["word_embedding_dimension", "embedding_dimension"])
def test_the_pooling_width_follows_the_output_as_each_sentence_transformers_names_it(key):
    """sentence-transformers up to 5 writes the pooling width as
    ``word_embedding_dimension``, 6 as ``embedding_dimension``: either follows a narrower
    output's hidden size (SentenceTransformer reports it as the embedding's width), the
    rest of the file as it was; at the source's width every byte is kept."""
    from zoo.api.side_files import fit_to_width

    files = {
        name: data.encode()
        for name, data in sentence_transformers_files(32).items()
        if name != "1_Pooling/config.json"
    }
    pooling = {key: 32, "pooling_mode": "mean", "include_prompt": True}
    files["1_Pooling/config.json"] = json.dumps(pooling, indent=4).encode()
    narrow = fit_to_width(files, 32, 16)
    assert json.loads(narrow["1_Pooling/config.json"]) == {**pooling, key: 16}
    assert {n: d for n, d in narrow.items() if n != "1_Pooling/config.json"} == {
        n: d for n, d in files.items() if n != "1_Pooling/config.json"
    }
    assert fit_to_width(files, 32, 32) == files


def test_a_zoo_output_imported_again_keeps_the_sources_own_card(
    registry, bert_with_tokenizer, tmp_path
):
    """A folder zoo wrote at the source's own size is the source: imported, its card
    (zoo's, 'an initialization zoo derived from ...') leaves the source's licensed one."""
    src = registry.import_checkpoint(bert_with_tokenizer)
    card = next(f for f in src.files if f.role == "card")
    out = tmp_path / "same-size"
    sizes = {"layers": 4, "hidden": 32}  # the tiny source's own
    made = registry.materialize(src.name, out=out, **sizes)
    assert made.artifact.content_hash == src.content_hash
    assert "learngene" in (out / "README.md").read_text()  # zoo's card
    again = registry.import_checkpoint(out)
    assert again.id == src.id
    assert next(f for f in again.files if f.role == "card").digest == card.digest
    exported = registry.export(src.name, out=tmp_path / "exported")
    assert (exported / "README.md").read_bytes() == (bert_with_tokenizer / "README.md").read_bytes()


KEEPS = (
    "(zoo keeps the weights, config, tokenizer, generation and processor configs, chat "
    "template, card, license files, the code an auto_map names and a sentence-transformers "
    "pipeline)"
)


def test_an_import_names_what_it_leaves_behind(registry, bert_with_tokenizer, tmp_path, run_cli):
    """Code no auto_map names and a folder no modules.json names are not kept, and an
    export lacks them: the import says so, and says nothing for a plain checkpoint."""
    code, out, err = run_cli("import", str(bert_with_tokenizer), "--json")
    assert code == 0 and "note:" not in err and json.loads(out)["not_kept"] == [], err
    custom = tmp_path / "custom"
    shutil.copytree(bert_with_tokenizer, custom)
    (custom / "modeling_custom.py").write_text("# a model class\n")
    (custom / "modules.json").write_text("[]")
    (custom / "1_Pooling").mkdir()
    (custom / "1_Pooling" / "config.json").write_text("{}")
    (custom / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (custom / "training_args.bin").write_bytes(b"\0")
    (custom / "model.onnx").write_bytes(b"\0")
    code, _, err = run_cli("import", str(custom))
    assert code == 0, err
    weights = "model.onnx (weights in another format; an export holds safetensors)"
    left = f"1_Pooling/, {weights}, modeling_custom.py, training_args.bin"
    assert err == f"note: not kept, so an export lacks them: {left} {KEEPS}\n"


def test_every_file_an_import_does_not_keep_is_listed_with_why(
    registry, bert_with_tokenizer, tmp_path, run_cli, monkeypatch
):
    """The note shortens a long list and says where the whole of it is: --json carries
    it, `zoo show` lists it, and every output of the checkpoint says what it lacks. A
    file of a kind zoo keeps but cannot use (a FIFO, a folder, over the size limit) is
    listed with why."""
    from zoo.checkpoint import side_files

    folder = tmp_path / "crowded"
    shutil.copytree(bert_with_tokenizer, folder)
    extras = [f"extra-{i:02}.txt" for i in range(12)]
    for name in extras:
        (folder / name).write_text(name)
    (folder / "onnx").mkdir()
    (folder / "tokenizer.json").unlink()
    os.mkfifo(folder / "tokenizer.json")
    (folder / "README.md").unlink()
    (folder / "README.md").mkdir()
    (folder / "vocab.txt").write_text("x" * 1000)
    monkeypatch.setattr(side_files, "MAX_SIDE_FILE_BYTES", 400)
    code, out, err = run_cli("import", str(folder), "--json")
    assert code == 0, err
    expected = [
        {"name": "README.md", "why": "a folder, not a file"},
        *({"name": n, "why": None} for n in extras),
        {"name": "onnx/", "why": None},
        {"name": "tokenizer.json", "why": "a FIFO, not a regular file"},
        {"name": "vocab.txt", "why": "1000 bytes, over the 400 bytes a side file may hold"},
    ]
    assert json.loads(out)["not_kept"] == expected
    assert {f["name"] for f in json.loads(out)["files"]} == {"tokenizer_config.json"}
    shown = (
        "README.md (a folder, not a file), extra-00.txt, extra-01.txt, extra-02.txt, "
        "extra-03.txt, extra-04.txt, extra-05.txt, extra-06.txt and 8 more "
        "(`zoo show crowded` lists them all; --json gives them as not_kept)"
    )
    assert err == f"note: not kept, so an export lacks them: {shown} {KEEPS}\n"

    code, out, _ = run_cli("show", "crowded")
    (line,) = [line for line in out.splitlines() if line.startswith("not kept:")]
    assert line == (
        "not kept:  README.md (a folder, not a file), "
        + ", ".join(extras)
        + ", onnx/, tokenizer.json (a FIFO, not a regular file), vocab.txt (1000 bytes, "
        f"over the 400 bytes a side file may hold) (held by {folder.resolve()}; an export lacks "
        "them)"
    )
    for args in (
        ("export", "crowded", "--out", str(tmp_path / "exported")),
        ("materialize", "crowded", "--layers", "2", "--hidden", "16", "--out", str(tmp_path / "m")),
    ):
        code, out, err = run_cli(*args, "--json")
        assert code == 0, err
        assert json.loads(out)["not_kept"] == expected, args
        out_dir = args[args.index("--out") + 1]
        assert err.startswith(
            f"note: {out_dir} lacks files crowded's folder held, which zoo "
            "did not keep: README.md (a folder, not a file), extra-00.txt"
        )
        assert not any((Path(out_dir) / e["name"].rstrip("/")).exists() for e in expected[1:])


def test_a_side_file_or_weights_link_to_nothing_is_refused_not_skipped(
    registry, tiny_dir, bert_with_tokenizer, tmp_path, run_cli
):
    """An HF cache snapshot whose tokenizer blob is gone is incomplete: importing it
    without the tokenizer would replace a working one. A dangling link is named as one,
    for the weights too."""
    torn = tmp_path / "torn"
    shutil.copytree(bert_with_tokenizer, torn)
    (torn / "tokenizer.json").unlink()
    (torn / "tokenizer.json").symlink_to(tmp_path / "gone.json")
    code, out, err = run_cli("import", str(torn))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "tokenizer.json is a symbolic link to" in err and "which does not exist" in err
    (torn / "model.safetensors").unlink()
    (torn / "model.safetensors").symlink_to(tmp_path / "gone.safetensors")
    (torn / "tokenizer.json").unlink()
    for command in ("import", "audit"):
        code, _, err = run_cli(command, str(torn))
        assert code == 2 and "model.safetensors is a symbolic link to" in err, err
    assert registry.list() == []


# --- lineage from the Hub's records ------------------------------------------------------------


def cache_repo(repo_id: str, folder: Path, commit: str = "a" * 40) -> None:
    """Put ``folder`` into the HF cache (HF_HUB_CACHE) as ``repo_id`` at ``commit``."""
    repo = Path(os.environ["HF_HUB_CACHE"]) / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def with_card(tiny_dir, family: str, seed: int, folder: Path, card: str) -> Path:
    shutil.copytree(tiny_dir(family, seed=seed), folder)
    (folder / "README.md").write_text(card)
    return folder


def edges_into(registry, name: str) -> set[tuple[str, str, str]]:
    g = registry.lineage(name, down=False)
    return {(g.nodes[e.parent_id].name, e.relation, g.nodes[e.child_id].name) for e in g.edges}


def test_a_cards_base_model_is_an_edge_from_a_placeholder_until_it_is_imported(
    registry, tiny_dir, tmp_path, run_cli
):
    child = registry.import_checkpoint(
        with_card(tiny_dir, "bert", 1, tmp_path / "child", CARD.format(base="org/base"))
    )
    assert edges_into(registry, child.name) == {("org/base", "finetune", "child")}
    code, out, _ = run_cli("ls", "--kind", "placeholder", "--json")
    assert code == 0
    (ph,) = json.loads(out)["artifacts"]
    assert (ph["name"], ph["family"], ph["tensor_count"]) == ("org/base", None, 0)
    assert "org/base --finetune--> child" in run_cli("lineage", "child")[1]
    line = one_line_refusal(
        *run_cli("materialize", "org/base", "--layers", "2", "--hidden", "16")[::2]
    )
    assert "placeholder" in line and "zoo import org/base" in line
    code, out, err = run_cli("export", "org/base", "--out", str(tmp_path / "ph"))
    assert code == 2 and "zoo import org/base" in err and not (tmp_path / "ph").exists()
    # Every command that needs weights refuses a placeholder as bad input, alike.
    for args in (("rederive", "org/base"), ("extract", "org/base")):
        assert run_cli(*args)[0] == 2, args

    registry.tag("org/base", "the-base")  # an alias of the placeholder, moved with it

    # The base is imported from the Hub (its cache): it takes the placeholder's place.
    cache_repo("org/base", tiny_dir("bert", seed=0))
    base = registry.import_checkpoint("org/base")
    assert registry.list(kind="placeholder") == []
    assert registry.show("the-base").id == base.id
    assert [(s.artifact_name, s.kind) for s in registry.alias_history("the-base")] == [
        (base.name, "source"),
        ("org/base", "placeholder"),
    ]
    assert registry.show("org/base").id == base.id  # the id now names the import
    assert edges_into(registry, child.name) == {(base.name, "finetune", "child")}
    assert "child" in {n.name for n in registry.lineage(base.name, up=False).nodes.values()}

    # A card naming a registered base links to it; several bases are a merge, and the
    # card's own relation wins when it states one.
    merged = registry.import_checkpoint(
        with_card(
            tiny_dir,
            "bert",
            2,
            tmp_path / "merged",
            "---\nbase_model:\n- org/base\n- gpt2\n---\n",
        )
    )
    assert edges_into(registry, merged.name) == {
        (base.name, "merge", "merged"),
        ("hf:gpt2", "merge", "merged"),  # a legacy id: never a registry or family name
    }
    quant = registry.import_checkpoint(
        with_card(
            tiny_dir,
            "bert",
            3,
            tmp_path / "quant",
            "---\nbase_model: org/base\nbase_model_relation: quantized\n---\n",
        )
    )
    assert edges_into(registry, quant.name) == {(base.name, "quantized", "quant")}

    # A placeholder no edge uses any more is forgotten by gc.
    registry.tag("hf:gpt2", "gpt2-base")
    registry.rm("merged")
    code, out, err = run_cli("gc", "--grace", "0s")
    assert code == 0, err
    # No one removed the placeholder: gc says why it went, apart from what was removed.
    assert "forgot 1 removed artifacts: merged\n" in out
    assert "forgot 1 placeholders no model card names as a base any more: hf:gpt2" in out
    assert [a.name for a in registry.list(kind="placeholder", include_deleted=True)] == []
    # Its alias went with it, and the alias's history says so.
    gone, was = registry.alias_history("gpt2-base")
    assert gone.artifact_name is None and (was.artifact_name, was.kind) == (
        "hf:gpt2",
        "placeholder",
    )


def test_a_card_imported_again_after_its_base_was_removed_keeps_its_one_edge(
    registry, tiny_dir, tmp_path
):
    """The edge from the removed base is the card's: no placeholder takes its place as a
    second parent, for a registry name or a Hub id, nor once the base is back."""
    base = registry.import_checkpoint(tiny_dir("bert"), name="tiny-base")
    child = registry.import_checkpoint(
        with_card(tiny_dir, "bert", 1, tmp_path / "child", CARD.format(base="tiny-base"))
    )
    cache_repo("acme/base", tiny_dir("bert", seed=2))
    hub_base = registry.import_checkpoint("acme/base")
    hub_child = registry.import_checkpoint(
        with_card(tiny_dir, "bert", 3, tmp_path / "hub-child", CARD.format(base="acme/base"))
    )
    registry.rm(base.name)
    registry.rm(hub_base.name)
    for _ in range(2):  # imported again, then again with both bases back
        registry.import_checkpoint(tmp_path / "child")
        registry.import_checkpoint(tmp_path / "hub-child")
        assert edges_into(registry, child.name) == {("tiny-base", "finetune", child.name)}
        assert edges_into(registry, hub_child.name) == {(hub_base.name, "finetune", hub_child.name)}
        assert registry.list(kind="placeholder", include_deleted=True) == []
        registry.import_checkpoint(tiny_dir("bert"), name="tiny-base")
        registry.import_checkpoint("acme/base")


def test_a_hub_repository_id_names_the_artifact_imported_last_from_it(
    registry, tiny_dir, tmp_path, run_cli
):
    cache_repo("acme/tiny-bert", tiny_dir("bert", seed=0), commit="a" * 40)
    first = registry.import_checkpoint("acme/tiny-bert")
    assert first.name == "tiny-bert"
    for query in ("acme/tiny-bert", "hf://acme/tiny-bert"):
        assert registry.show(query).id == first.id
    # A newer revision of the repository, other weights: the id follows it.
    cache_repo("acme/tiny-bert", tiny_dir("bert", seed=1), commit="b" * 40)
    second = registry.import_checkpoint("acme/tiny-bert")
    assert second.id != first.id
    assert registry.show("acme/tiny-bert").id == second.id
    code, out, err = run_cli("show", "acme/tiny-bert", "--json")
    assert code == 0 and json.loads(out)["name"] == second.name, err

    # Every command that takes a name takes it: materialize, lineage, link, tag.
    made = registry.materialize("acme/tiny-bert", layers=2, hidden=16)
    assert edges_into(registry, made.artifact.name) == {
        (second.name, "materialize", made.artifact.name)
    }
    code, out, err = run_cli("lineage", "acme/tiny-bert", "--format", "json")
    assert code == 0, err
    assert made.artifact.name in out
    local = registry.import_checkpoint(tiny_dir("bert", seed=2), name="tuned")
    registry.link("tuned", "acme/tiny-bert")  # by name in one statement where it can
    assert edges_into(registry, local.name) == {(second.name, "finetune", "tuned")}
    registry.tag("hf://acme/tiny-bert", "current")
    assert registry.show("current").id == second.id

    # The first revision imported again (the Hub's main moved back): the id follows it.
    (Path(os.environ["HF_HUB_CACHE"]) / "models--acme--tiny-bert/refs/main").write_text("a" * 40)
    assert registry.import_checkpoint("acme/tiny-bert").id == first.id
    assert registry.show("acme/tiny-bert").id == first.id
    assert registry.import_checkpoint("acme/tiny-bert", revision="b" * 40).id == second.id
    assert registry.show("acme/tiny-bert").id == second.id
    # A pinned revision imported later does not take the id over from the default branch.
    cache_repo("acme/tiny-bert", tiny_dir("bert", seed=6), commit="c" * 40)
    (Path(os.environ["HF_HUB_CACHE"]) / "models--acme--tiny-bert/refs/main").write_text("b" * 40)
    pinned = registry.import_checkpoint("acme/tiny-bert", revision="c" * 40)
    assert pinned.id not in (first.id, second.id)
    assert registry.show("acme/tiny-bert").id == second.id
    registry.rm(pinned.name)

    # Removed, the revision before answers; none left, the error says how to get one.
    registry.rm(second.name, cascade=True)
    assert registry.show("acme/tiny-bert").id == first.id
    registry.rm(first.name)
    code, _, err = run_cli("show", "acme/tiny-bert")
    assert code != 0 and "zoo import acme/tiny-bert" in err and len(err.splitlines()) == 1
    # Only ORG/NAME is an id: a deeper path is looked up as a name, and not found.
    assert registry.list(kind="placeholder") == []
    for not_an_id in ("acme/tiny-bert/extra", "../tiny-bert", "acme/-x"):
        code, _, err = run_cli("show", not_an_id)
        assert code != 0 and "zoo import" not in err, not_an_id


def test_the_lineage_drawing_draws_a_placeholder(registry, tiny_dir, tmp_path):
    """The web page's lineage picture draws a card's base_model (a placeholder) beside
    the model that names it, as the DOT and Mermaid outputs do."""
    pytest.importorskip("fastapi")
    import xml.etree.ElementTree as ET

    from zoo.server.svg import lineage_svg

    folder = with_card(tiny_dir, "gpt2", 1, tmp_path / "ft", CARD.format(base="acme/base"))
    tuned = registry.import_checkpoint(folder)
    for name in (tuned.name, "acme/base"):
        svg = lineage_svg(registry.lineage(name))
        texts = "".join(ET.fromstring(svg).itertext())
        assert "acme/base" in texts and tuned.name in texts, name


def test_zoos_own_card_adds_no_edge_when_its_folder_is_imported(registry, tiny_dir, tmp_path):
    src = registry.import_checkpoint(tiny_dir("bert"))
    m = registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "small")
    again = registry.import_checkpoint(m.out)
    assert again.id == m.artifact.id and registry.list(kind="placeholder") == []
    # Changed after it was derived: a new source whose card names zoo's source by name.
    changed = tmp_path / "changed"
    shutil.copytree(m.out, changed)
    from safetensors.torch import load_file, save_file

    state = load_file(changed / "model.safetensors")
    key = next(iter(state))
    state[key] = state[key] + 1
    save_file(state, changed / "model.safetensors", metadata={"format": "pt"})
    tuned = registry.import_checkpoint(changed)
    assert edges_into(registry, tuned.name) == {(src.name, "finetune", "changed")}
    assert registry.list(kind="placeholder") == []


def test_a_derived_card_names_as_base_model_only_a_hub_repository_its_source_came_from(
    registry, tiny_dir, tmp_path
):
    """A source imported from a folder has no Hub id: its derived card names it in the
    text only, and another registry importing the folder invents no Hub repository for
    it. One imported from the Hub, or a learngene of it, names that repository; imported
    elsewhere as it was written, the folder derives from it (not a finetune of it)."""
    import zoo

    registry.import_checkpoint(tiny_dir("bert", seed=4), name="ml")
    local = registry.materialize("ml", layers=2, hidden=16, out=tmp_path / "s").out
    assert "base_model" not in front_matter(local)
    assert "derived from `ml` with weight-selection" in (local / "README.md").read_text()
    cache_repo("acme/tiny-bert", tiny_dir("bert", seed=5))
    hub = registry.import_checkpoint("acme/tiny-bert")
    lg = registry.extract(hub.name, method="dwt", wavelet="haar")
    from_hub = registry.materialize(lg.name, layers=2, hidden=16, out=tmp_path / "hs").out
    assert front_matter(from_hub)["base_model"] == "acme/tiny-bert"
    assert "(from the Hub model `acme/tiny-bert`)" in (from_hub / "README.md").read_text()

    # A zoo card may also name a source known only in its own registry as its base_model.
    earlier = tmp_path / "earlier"
    shutil.copytree(local, earlier)
    (earlier / "README.md").write_text(
        (local / "README.md").read_text().replace("---\n", "---\nbase_model: ml\n", 1)
    )
    other = zoo.connect(db_url=f"sqlite:///{tmp_path / 'other.db'}", store_url=str(tmp_path / "b"))
    try:
        for folder in (local, earlier):
            s = other.import_checkpoint(folder)
            assert edges_into(other, s.name) == set(), folder
        assert other.list(kind="placeholder") == []
        h = other.import_checkpoint(from_hub)
        assert edges_into(other, h.name) == {("acme/tiny-bert", "derive", "hs")}
    finally:
        other.close()


def test_a_corrected_card_takes_back_the_edges_the_card_it_replaces_declared(
    registry, tiny_dir, tmp_path, run_cli
):
    """The newest import that brings a card defines the card, and the base_model edges
    follow it: the stale edge goes, and its placeholder with it when nothing else uses it
    (one with an alias stays for `zoo gc`, which keeps the alias's history). An import
    without a card, or with the card zoo wrote, leaves them."""
    wrong = with_card(tiny_dir, "bert", 1, tmp_path / "r1" / "a", CARD.format(base="acme/wrong"))
    registry.import_checkpoint(wrong, name="m")
    other = with_card(tiny_dir, "bert", 1, tmp_path / "r1" / "c", CARD.format(base="acme/other"))
    registry.import_checkpoint(other)
    registry.tag("acme/other", "other-base")
    right = with_card(tiny_dir, "bert", 1, tmp_path / "r1" / "b", CARD.format(base="acme/right"))
    m = registry.import_checkpoint(right, name="m")
    assert edges_into(registry, "m") == {("acme/right", "finetune", m.name)}
    code, out, _ = run_cli("lineage", "m")
    assert code == 0 and "acme/right --finetune-->" in out and "acme/wrong" not in out
    placeholders = {p.name for p in registry.list(kind="placeholder")}
    assert placeholders == {"acme/right", "acme/other"}
    assert "acme/other" in registry.gc(grace="0s").hard_deleted

    bare = tmp_path / "r1" / "bare"
    shutil.copytree(tiny_dir("bert", seed=1), bare)
    registry.import_checkpoint(bare)
    registry.materialize("m", layers=4, hidden=32, out=tmp_path / "same-size")
    registry.import_checkpoint(tmp_path / "same-size")
    assert edges_into(registry, "m") == {("acme/right", "finetune", m.name)}
    (right / "README.md").write_text(
        "---\nbase_model: acme/right\nbase_model_relation: quantized\n---\n"
    )
    registry.import_checkpoint(right)
    assert edges_into(registry, "m") == {("acme/right", "quantized", m.name)}


def test_a_same_size_card_says_the_weights_are_the_sources_and_which_method_was_recorded(
    registry, tiny_dir, tmp_path
):
    """A folder that reproduces its source bit for bit is not called an untrained
    initialization; and when a method gives content already recorded under another
    method's name, the card says both, not one in the title and another in the text."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    ws = registry.materialize(
        src.name, layers=4, hidden=32, method="weight-selection", out=tmp_path / "ws"
    )
    assert ws.artifact.content_hash == src.content_hash
    card = (ws.out / "README.md").read_text()
    assert "initialization" not in card and "train it" not in card
    assert f"The weights and config are `{src.name}`'s, bit for bit" in card
    assert f"inherited from `{src.name}`" not in card  # its card names no license
    dct = registry.materialize(src.name, layers=4, hidden=32, method="dct", out=tmp_path / "dct")
    assert dct.artifact.id == ws.artifact.id and "weight-selection" in ws.artifact.name
    card = (dct.out / "README.md").read_text()
    assert f"# {ws.artifact.name}\n" in card and "at its own size with dct" in card
    assert (
        f"The registry recorded these same weights first as `{ws.artifact.name}`, derived "
        "with weight-selection; dct gave them again, bit for bit"
    ) in card
    # What the card says the lineage shows, the lineage shows: one recipe a parent, so the
    # source's dct recipe is not recorded beside its weight-selection one, while a
    # learngene's is, from the learngene.
    assert "shows both recipes" not in card
    assert (
        f"keeps one recipe from each parent: from `{src.name}`, the weight-selection one "
        "recorded first"
    ) in card
    lg = registry.extract(src.name, method="dct")
    again = registry.materialize(lg.name, layers=4, hidden=32, out=tmp_path / "dct-lg")
    assert again.artifact.id == ws.artifact.id
    assert (
        f"(`zoo lineage {ws.artifact.name}` shows both recipes)"
        in (again.out / "README.md").read_text()
    )
    g = registry.lineage(ws.artifact.name, down=False)
    methods = {
        (g.nodes[e.parent_id].name, e.recipe["method"])
        for e in g.edges
        if e.relation == "materialize"
    }
    assert methods == {(src.name, "weight-selection"), (lg.name, "dct")}


def test_downgrade_forgets_placeholders_and_keeps_family_less_sources(
    db_url, tiny_dir, tmp_path, monkeypatch
):
    """0005's downgrade: placeholders and their edges go, a source with no family gets
    family '' (the older zoo catalogues it and refuses to resize it); upgrade again."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    import zoo
    from zoo.db import engine as db_engine

    monkeypatch.setenv("ZOO_DB_URL", db_url)
    monkeypatch.setenv("ZOO_STORE_URL", str(tmp_path / "blobs"))
    reg = zoo.connect()
    reg.import_checkpoint(save_t5(tmp_path / "t5"))
    reg.import_checkpoint(
        with_card(tiny_dir, "bert", 1, tmp_path / "child", CARD.format(base="o/b"))
    )
    reg.tag("o/b", "upstream")  # an alias of the placeholder goes with it, said so
    reg.close()
    cfg = Config()
    cfg.set_main_option("script_location", db_engine.migrations_path())
    scripts = ScriptDirectory.from_config(cfg)
    before = scripts.get_revision("0005").down_revision
    engine = db_engine.make_engine(db_url)
    try:
        lost = r"undoing 0005, .*base models \(1\) with their edges and aliases \(1\)"
        with pytest.raises(ConflictError, match=lost):
            db_engine.downgrade(engine, before)
        db_engine.downgrade(engine, before, drop_data=True)
        with engine.connect() as c:
            rows = c.execute(text("SELECT name, kind, family FROM artifacts ORDER BY name")).all()
            assert [tuple(r) for r in rows] == [("child", "source", "bert"), ("t5", "source", "")]
            assert c.execute(text("SELECT count(*) FROM edges")).scalar() == 0
        db_engine.upgrade(engine)
    finally:
        engine.dispose()


def test_two_imports_of_one_content_under_one_name_both_answer_with_it(
    registry, tiny_dir, monkeypatch
):
    """The other import commits after this one looked for the content and before it
    checks the name: the name is then taken by that same content, and this import answers
    with the artifact (it once said the name was taken by other content)."""
    import threading

    import zoo
    from zoo.api import catalog

    if registry.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs the two imports one after the other")
    real, other_done = catalog._existing, []

    def look_then_lose_the_race(reg, session, ready):
        found = real(reg, session, ready)
        if not other_done:  # the other import, committed before this one writes
            other_done.append(True)
            other = zoo.connect()
            worker = threading.Thread(
                target=lambda: other_done.append(
                    other.import_checkpoint(tiny_dir("gpt2"), name="m0")
                )
            )
            worker.start()
            worker.join(60)
            other.close()
        return found

    monkeypatch.setattr(catalog, "_existing", look_then_lose_the_race)
    mine = registry.import_checkpoint(tiny_dir("gpt2"), name="m0")
    assert len(other_done) == 2 and mine.id == other_done[1].id and mine.name == "m0"
    assert [a.name for a in registry.list()] == ["m0"]
