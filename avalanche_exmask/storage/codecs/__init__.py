"""Codecs: how one exemplar is stored compactly and rebuilt (masked, raw, JPEG, CIM)."""
from avalanche_exmask.storage.codecs.base import Codec, Record, RecordDecodeError
from avalanche_exmask.storage.codecs.cim import CimCodec
from avalanche_exmask.storage.codecs.jpeg import JpegCodec
from avalanche_exmask.storage.codecs.masked import MaskedCodec, MaskedRecord
from avalanche_exmask.storage.codecs.raw import RawCodec

__all__ = ["Codec", "Record", "RecordDecodeError", "MaskedCodec", "MaskedRecord", "RawCodec", "JpegCodec", "CimCodec"]
