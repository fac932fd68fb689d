"""Tokenizer of a checkpoint folder or GGUF file: encode, decode, special-token ids and the chat template.

``Tokenizer.from_pretrained(folder)`` loads ``tokenizer.json`` with the Rust ``tokenizers`` library (fast,
no transformers import). Only when that file is absent and other tokenizer files exist (a SentencePiece
``tokenizer.model``, ``vocab.json`` + ``merges.txt``, ...) does it fall back to transformers'
``AutoTokenizer`` with local files only. Encoding, decoding and chat-template rendering follow
transformers (the tests compare against ``PreTrainedTokenizerFast`` on the same folder).
``Tokenizer.from_gguf(path)`` rebuilds the tokenizer a GGUF file describes in its metadata.

The modules import one way only: ``tokenizer`` (the class) -> ``gguf`` -> ``backends``; ``files`` and
``chat_template`` stand alone.
"""

from .chat_template import compile_chat_template
from .tokenizer import Tokenizer

#: ``Tokenizer.from_gguf`` as a function.
tokenizer_from_gguf = Tokenizer.from_gguf

__all__ = ["Tokenizer", "compile_chat_template", "tokenizer_from_gguf"]
