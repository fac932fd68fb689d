"""BERT model plugin: sentence-embedding encoders (all-MiniLM-L6-v2, BGE, E5 ... in the BERT architecture).

The manifest (plugin_manifest.json) routes ``model_type: bert`` / ``BertModel`` here; pooling and
normalization follow the checkpoint's sentence-transformers files (modules.json, 1_Pooling/).
"""

from .config import BertConfig
from .model import BertModel, create_bert_model
from .plugin import Bert_Plugin, create_bert_plugin
from .sentence_config import SentenceEmbeddingConfig

__all__ = ["BertConfig", "BertModel", "create_bert_model", "Bert_Plugin", "create_bert_plugin",
           "SentenceEmbeddingConfig"]
