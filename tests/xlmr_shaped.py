"""A tiny XLM-R-shaped tokenizer for tests: XLM-R's special ids and a vocabulary too large for uint16.

<s>=0, <pad>=1, </s>=2, <unk>=3, <mask> the last of 70,000 ids; the words of `TEXTS` (five languages,
no word shared between them) get ids above 65,535 from one block per language, so a token's id names
its language and a uint16 token folder would corrupt every one of them.
"""

from __future__ import annotations

from pathlib import Path

VOCAB_SIZE = 70_000
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3 as in XLM-R; <mask> is the last id
TEXTS = {
    "de": ["Paketverwaltung für Node.js", "Echtzeit Strategiespiel über antike Kriegsführung"],
    "ru": ["Менеджер пакетов для JavaScript", "Стратегия в реальном времени"],
    "zh": ["软件 包 管理器", "实时 战略 游戏"],
    "ar": ["مدير الحزم", "لعبة استراتيجية"],
    "en": ["Package manager for npm", "Real-time strategy game of ancient warfare"],
}
# Each language's words get ids from their own block above uint16 (so a chunk's source is readable).
# (no word is shared between languages, so every id names its language)
BLOCK = {lang: 65_600 + 800 * i for i, lang in enumerate(TEXTS)}


def language_of(token_id: int) -> str | None:
    for lang, start in BLOCK.items():
        if start <= token_id < start + 800:
            return lang
    return None


def write_xlmr_shaped_tokenizer(folder: Path) -> Path:
    """A word-level fast tokenizer folder with XLM-R's special ids and a 70,000-entry vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for lang, texts in TEXTS.items():
        words = sorted({w for text in texts for w in text.split()})
        vocab.update({word: BLOCK[lang] + j for j, word in enumerate(words)})
    used = set(vocab.values())
    filler = (i for i in range(len(SPECIALS), VOCAB_SIZE - 1) if i not in used)
    while len(vocab) < VOCAB_SIZE - 1:
        vocab[f"w{len(vocab)}"] = next(filler)
    vocab["<mask>"] = VOCAB_SIZE - 1
    assert sorted(vocab.values()) == list(range(VOCAB_SIZE))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    fast.save_pretrained(folder)
    return folder
