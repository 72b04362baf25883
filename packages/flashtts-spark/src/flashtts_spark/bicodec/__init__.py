"""BiCodec, the Spark-TTS audio codec, in plain PyTorch with the released checkpoint's names."""

from .codec_api import BiCodecTokenizer, load_bicodec
from .model import BiCodec
from .tiny import write_tiny_bicodec

__all__ = ["BiCodec", "BiCodecTokenizer", "load_bicodec", "write_tiny_bicodec"]
