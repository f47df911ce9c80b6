"""pprof's profile.proto, written and read by a small codec of our own.

The wire format is plain protobuf (varints and length-delimited fields), and
profile.proto uses only a handful of its features, so a few hundred lines do
the job. Depending on the `protobuf` package instead would break two promises:
the core install is dependency-free, and holmespy runs inside a host
application whose own pinned `protobuf` version must never conflict with ours.

`encode` writes what `go tool pprof`, Pyroscope, Speedscope's importer and the
like expect: one mapping with every `has_*` flag set (so no consumer tries to
symbolize addresses), locations deduplicated by (function, line), functions
deduplicated by (name, filename, start_line), and a string table that starts
with "". The same `Profile` always gives the same bytes (gzip mtime 0), so
bundles can be compared by digest.

`decode` can be given a `max_size`: the most bytes the profile may have once
decompressed (checked while decompressing, so a gzip bomb stops there), and a
budget for what decoding builds in memory, four times that (each sample or
other top-level message counted as 512 bytes, each byte of a packed list of
ids as 32), since a small protobuf can stand for millions of Python objects.
Past either, `ProfileTooLarge`.

`decode` also reads profiles from other writers (Go's runtime/pprof, py-spy and
friends): unknown fields are skipped, repeated scalars are accepted packed and
unpacked, input may be gzipped or raw. A location with several lines (inlined
calls) becomes several frames, innermost first. Numeric labels are kept as
their decimal string, followed by a space and the unit when `num_unit` is set
(e.g. {"bytes": "1024"} or {"size": "1024 bytes"}). A location without lines
(an unsymbolized address) becomes a frame named after its hex address. When a
sample repeats a label key, the last value wins.
"""

from __future__ import annotations

import gzip
import operator
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from holmespy.bundle import write_private
from holmespy.errors import HolmesError
from holmespy.formats.profile import Frame, Profile, Sample, ValueType

__all__ = [
    "ProfileFormatError",
    "ProfileTooLarge",
    "decode",
    "encode",
    "read_pprof",
    "write_pprof",
]

_MASK64 = (1 << 64) - 1
_SIGN64 = 1 << 63

# Wire types.
_VARINT = 0
_FIXED64 = 1
_LEN = 2
_FIXED32 = 5

_GZIP_MAGIC = b"\x1f\x8b"


class ProfileFormatError(HolmesError):
    """The data is not a pprof profile, or a corrupt one; the message says what is wrong."""


class ProfileTooLarge(ProfileFormatError):
    """The profile is larger than the `max_size` it was read with (a gzip bomb, or a
    profile far beyond any real one); the message names the limit."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class _Corrupt(Exception):
    """Internal: a structural problem, turned into one ProfileFormatError line by `decode`."""


class _OverBudget(Exception):
    """Internal: decoding would build more than the memory budget allows."""


MESSAGE_COST = 512
"""Bytes of memory one decoded top-level message (a sample, a location, a string) is counted as."""
PACKED_BYTE_COST = 32
"""Bytes one byte of a packed list of ids is counted as (a list slot, a tuple slot, an int)."""
MEMORY_PER_BYTE = 4
"""The memory budget of decoding, per byte of `max_size`."""


# --------------------------------------------------------------------------- encoding


def _put_varint(out: bytearray, value: int) -> None:
    # int64 fields carry negatives as 10-byte two's complement, as protobuf does.
    value &= _MASK64
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_uint_field(out: bytearray, field: int, value: int) -> None:
    # proto3 leaves defaults (0, false) off the wire.
    if value:
        out.append(field << 3 | _VARINT)
        _put_varint(out, value)


def _put_bytes_field(out: bytearray, field: int, payload: bytes | bytearray) -> None:
    _put_varint(out, field << 3 | _LEN)
    _put_varint(out, len(payload))
    out += payload


def _put_packed_field(out: bytearray, field: int, values: Sequence[int]) -> None:
    if not values:
        return
    packed = bytearray()
    for v in values:
        _put_varint(packed, v)
    _put_bytes_field(out, field, packed)


def _value_type(type_index: int, unit_index: int) -> bytearray:
    body = bytearray()
    _put_uint_field(body, 1, type_index)
    _put_uint_field(body, 2, unit_index)
    return body


# Deduplication key of a location: its function (name, file, start line) and line.
_frame_key: Callable[[Frame], tuple[str, str, int, int]] = operator.attrgetter(
    "function", "filename", "start_line", "line"
)


def encode(profile: Profile) -> bytes:
    """`profile` as gzipped profile.proto bytes, identical for identical input."""
    strings: dict[str, int] = {"": 0}

    def intern(text: str) -> int:
        index = strings.get(text)
        if index is None:
            index = strings[text] = len(strings)
        return index

    functions: dict[tuple[str, str, int], int] = {}
    function_bodies: list[bytearray] = []
    locations: dict[tuple[str, str, int, int], int] = {}
    location_bodies: list[bytearray] = []

    def location_id(frame: Frame) -> int:
        frame_key = _frame_key(frame)
        loc = locations.get(frame_key)
        if loc is not None:
            return loc
        key = (frame.function, frame.filename, frame.start_line)
        fn = functions.get(key)
        if fn is None:
            fn = functions[key] = len(functions) + 1
            body = bytearray()
            _put_uint_field(body, 1, fn)
            name = intern(frame.function)
            _put_uint_field(body, 2, name)
            _put_uint_field(body, 3, name)
            _put_uint_field(body, 4, intern(frame.filename))
            _put_uint_field(body, 5, frame.start_line)
            function_bodies.append(body)
        loc = locations[frame_key] = len(locations) + 1
        line = bytearray()
        _put_uint_field(line, 1, fn)
        _put_uint_field(line, 2, frame.line)
        body = bytearray()
        _put_uint_field(body, 1, loc)
        _put_uint_field(body, 2, 1)  # mapping_id
        _put_bytes_field(body, 4, line)
        location_bodies.append(body)
        return loc

    # Per sample, everything below is a dict lookup: stacks, value tuples and
    # label sets repeat across samples, so each is encoded once. Producers
    # usually share one tuple per distinct stack; looking it up by id first
    # skips building a key from every frame of every sample. The profile keeps
    # the tuples alive for the whole call, so ids cannot be reused meanwhile.
    stack_by_id: dict[int, bytes] = {}
    stack_by_value: dict[tuple[tuple[str, str, int, int], ...], bytes] = {}
    values_cache: dict[tuple[int, ...], bytes] = {}
    labels_cache: dict[tuple[tuple[str, str], ...], bytes] = {}
    sample_tag = bytes([2 << 3 | _LEN])

    out = bytearray()
    for vt in profile.sample_types:
        _put_bytes_field(out, 1, _value_type(intern(vt.type), intern(vt.unit)))

    for sample in profile.samples:
        stack = sample.stack
        stack_field = stack_by_id.get(id(stack))
        if stack_field is None:
            value_key = tuple(map(_frame_key, stack))
            stack_field = stack_by_value.get(value_key)
            if stack_field is None:
                field = bytearray()
                _put_packed_field(field, 1, [location_id(f) for f in stack])
                stack_field = stack_by_value[value_key] = bytes(field)
            stack_by_id[id(stack)] = stack_field

        values_field = values_cache.get(sample.values)
        if values_field is None:
            field = bytearray()
            _put_packed_field(field, 2, sample.values)
            values_field = values_cache[sample.values] = bytes(field)

        label_fields = b""
        if sample.labels:
            label_key = tuple(sample.labels.items())
            cached = labels_cache.get(label_key)
            if cached is None:
                field = bytearray()
                # Sorted so that label order never changes the bytes.
                for key, value in sorted(label_key):
                    label = bytearray()
                    _put_uint_field(label, 1, intern(key))
                    _put_uint_field(label, 2, intern(value))
                    _put_bytes_field(field, 3, label)
                cached = labels_cache[label_key] = bytes(field)
            label_fields = cached

        size = len(stack_field) + len(values_field) + len(label_fields)
        out += sample_tag
        if size < 0x80:
            out.append(size)
        else:
            _put_varint(out, size)
        out += stack_field
        out += values_field
        out += label_fields

    mapping = bytearray()
    _put_uint_field(mapping, 1, 1)  # id
    for flag in (7, 8, 9):  # has_functions, has_filenames, has_line_numbers
        _put_uint_field(mapping, flag, 1)
    _put_bytes_field(out, 3, mapping)
    for body in location_bodies:
        _put_bytes_field(out, 4, body)
    for body in function_bodies:
        _put_bytes_field(out, 5, body)

    # Every string must be interned before the table is written.
    tail = bytearray()
    _put_uint_field(tail, 9, profile.time_nanos)
    _put_uint_field(tail, 10, profile.duration_nanos)
    if profile.period_type is not None:
        pt = profile.period_type
        _put_bytes_field(tail, 11, _value_type(intern(pt.type), intern(pt.unit)))
    _put_uint_field(tail, 12, profile.period)
    _put_packed_field(tail, 13, [intern(c) for c in profile.comments])
    if profile.default_sample_type:
        _put_uint_field(tail, 14, intern(profile.default_sample_type))

    for text in strings:  # dicts keep insertion order, which is the index order
        # Lone surrogates (undecodable file names) would make the table invalid UTF-8.
        _put_bytes_field(out, 6, text.encode("utf-8", "replace"))
    out += tail
    # Level 1, as Go's runtime/pprof does: profiles are written while the
    # server is in trouble, so speed matters more than the last few percent.
    return gzip.compress(out, compresslevel=1, mtime=0)


def write_pprof(profile: Profile, path: Path | str) -> None:
    """Write `profile` to `path` as a new 0600 file (it must not exist yet)."""
    write_private(Path(path), encode(profile))


# --------------------------------------------------------------------------- decoding

# A field as parsed: (number, wire type, value or start, end). For varints the
# third item is the value; for length-delimited fields it is [start, end).
_Field = tuple[int, int, int, int]


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _Corrupt("a varint runs past the end of its message")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise _Corrupt("a varint is longer than 10 bytes (overflow)")


def _fields(buf: bytes, start: int, end: int, limit: int | None = None) -> list[_Field]:
    fields: list[_Field] = []
    pos = start
    while pos < end:
        if limit is not None and len(fields) >= limit:
            raise _OverBudget(f"more than {limit:,} messages")
        key, pos = _read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Corrupt("field number 0")
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos, end)
            fields.append((number, wire, value, 0))
        elif wire == _LEN:
            size, pos = _read_varint(buf, pos, end)
            if size > end - pos:
                raise _Corrupt(f"field {number} claims {size} bytes but only {end - pos} remain")
            fields.append((number, wire, pos, pos + size))
            pos += size
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise _Corrupt(f"fixed-size field {number} runs past the end of its message")
        else:
            # Groups (3, 4) are deprecated and unused by profile.proto; 6 and 7 do not exist.
            raise _Corrupt(f"field {number} has unsupported wire type {wire}")
    return fields


def _repeated(buf: bytes, field: _Field, into: list[int]) -> None:
    """Append a repeated integer field's values, whether packed or not."""
    number, wire, a, b = field
    if wire == _VARINT:
        into.append(a)
    elif wire == _LEN:
        pos = a
        while pos < b:
            value, pos = _read_varint(buf, pos, b)
            into.append(value)
    else:
        raise _Corrupt(f"repeated integer field {number} has wire type {wire}")


def _scalar(field: _Field) -> int:
    number, wire, value, _ = field
    if wire != _VARINT:
        raise _Corrupt(f"integer field {number} has wire type {wire}")
    return value


def _span(field: _Field) -> tuple[int, int]:
    number, wire, start, end = field
    if wire != _LEN:
        raise _Corrupt(f"message field {number} has wire type {wire}")
    return start, end


def _signed(value: int) -> int:
    return value - (1 << 64) if value & _SIGN64 else value


class _Decoder:
    def __init__(self, buf: bytes, budget: int | None = None) -> None:
        self.buf = buf
        self.strings: list[str] = []
        self.budget = budget
        """Bytes of memory decoding may build, as counted by MESSAGE_COST and PACKED_BYTE_COST."""

    def spend(self, cost: int) -> None:
        if self.budget is None:
            return
        self.budget -= cost
        if self.budget < 0:
            raise _OverBudget("its samples' stacks")

    def string(self, index: int, what: str) -> str:
        if index >= len(self.strings):
            raise _Corrupt(
                f"{what} refers to string {index}, outside the string table "
                f"({len(self.strings)} strings)"
            )
        return self.strings[index]

    def value_type(self, start: int, end: int) -> tuple[int, int]:
        type_index = unit_index = 0
        for field in _fields(self.buf, start, end):
            if field[0] == 1:
                type_index = _scalar(field)
            elif field[0] == 2:
                unit_index = _scalar(field)
        return type_index, unit_index

    def decode(self) -> Profile:
        buf = self.buf
        limit = None if self.budget is None else self.budget // MESSAGE_COST
        top = _fields(buf, 0, len(buf), limit)
        self.spend(len(top) * MESSAGE_COST)

        # The string table may come anywhere in the stream, so read it first.
        for field in top:
            if field[0] == 6:
                start, end = _span(field)
                self.strings.append(buf[start:end].decode("utf-8", "replace"))
        if not self.strings:
            raise _Corrupt("there is no string table")
        if self.strings[0] != "":
            raise _Corrupt("the string table does not start with the empty string")

        sample_type_idx: list[tuple[int, int]] = []
        sample_spans: list[tuple[int, int]] = []
        mapping_files: dict[int, int] = {}
        location_spans: dict[int, tuple[int, int]] = {}
        function_spans: dict[int, tuple[int, int]] = {}
        comments: list[int] = []
        period_type: tuple[int, int] | None = None
        time_nanos = duration_nanos = period = default_type = 0

        for field in top:
            number = field[0]
            if number == 1:
                sample_type_idx.append(self.value_type(*_span(field)))
            elif number == 2:
                sample_spans.append(_span(field))
            elif number == 3:
                mapping_id = filename = 0
                for sub in _fields(buf, *_span(field)):
                    if sub[0] == 1:
                        mapping_id = _scalar(sub)
                    elif sub[0] == 5:
                        filename = _scalar(sub)
                mapping_files[mapping_id] = filename
            elif number in (4, 5):
                span = _span(field)
                ident = 0
                for sub in _fields(buf, *span):
                    if sub[0] == 1:
                        ident = _scalar(sub)
                        break
                (location_spans if number == 4 else function_spans)[ident] = span
            elif number == 9:
                time_nanos = _signed(_scalar(field))
            elif number == 10:
                duration_nanos = _signed(_scalar(field))
            elif number == 11:
                period_type = self.value_type(*_span(field))
            elif number == 12:
                period = _signed(_scalar(field))
            elif number == 13:
                _repeated(buf, field, comments)
            elif number == 14:
                default_type = _scalar(field)

        sample_types = tuple(
            ValueType(self.string(t, "a sample type"), self.string(u, "a sample type unit"))
            for t, u in sample_type_idx
        )
        functions: dict[int, tuple[str, str, int]] = {}
        for ident, span in function_spans.items():
            functions[ident] = self.function(span)
        location_frames: dict[int, tuple[Frame, ...]] = {}
        for ident, span in location_spans.items():
            location_frames[ident] = self.location(span, functions, mapping_files)

        stacks: dict[tuple[int, ...], tuple[Frame, ...]] = {}
        # Samples from a sampler repeat byte for byte (same stack, values and
        # labels), so each distinct encoding is parsed once.
        parsed: dict[bytes, tuple[tuple[Frame, ...], tuple[int, ...], dict[str, str]]] = {}
        samples: list[Sample] = []
        for start, end in sample_spans:
            raw = buf[start:end]
            known = parsed.get(raw)
            if known is None:
                known = parsed[raw] = self.sample(
                    start, end, len(sample_types), stacks, location_frames
                )
            stack, values, labels = known
            samples.append(Sample(stack, values, dict(labels)))

        return Profile(
            sample_types=sample_types,
            samples=samples,
            time_nanos=time_nanos,
            duration_nanos=duration_nanos,
            period_type=(
                None
                if period_type is None
                else ValueType(
                    self.string(period_type[0], "the period type"),
                    self.string(period_type[1], "the period unit"),
                )
            ),
            period=period,
            default_sample_type=self.string(default_type, "default_sample_type"),
            comments=[self.string(c, "a comment") for c in comments],
        )

    def sample(
        self,
        start: int,
        end: int,
        n_types: int,
        stacks: dict[tuple[int, ...], tuple[Frame, ...]],
        location_frames: dict[int, tuple[Frame, ...]],
    ) -> tuple[tuple[Frame, ...], tuple[int, ...], dict[str, str]]:
        loc_ids: list[int] = []
        values: list[int] = []
        labels: dict[str, str] = {}
        self.spend((end - start) * PACKED_BYTE_COST)  # once per distinct sample encoding
        for field in _fields(self.buf, start, end):
            if field[0] == 1:
                _repeated(self.buf, field, loc_ids)
            elif field[0] == 2:
                _repeated(self.buf, field, values)
            elif field[0] == 3:
                key, value = self.label(*_span(field))
                labels[key] = value
        if len(values) != n_types:
            raise _Corrupt(f"a sample has {len(values)} values for {n_types} sample types")
        key_ids = tuple(loc_ids)
        stack = stacks.get(key_ids)
        if stack is None:
            frames: list[Frame] = []
            for loc in key_ids:
                found = location_frames.get(loc)
                if found is None:
                    raise _Corrupt(f"a sample refers to location {loc}, which is not defined")
                frames.extend(found)
            stack = stacks[key_ids] = tuple(frames)
        return stack, tuple(_signed(v) for v in values), labels

    def function(self, span: tuple[int, int]) -> tuple[str, str, int]:
        name = system_name = filename = start_line = 0
        for field in _fields(self.buf, *span):
            number = field[0]
            if number == 2:
                name = _scalar(field)
            elif number == 3:
                system_name = _scalar(field)
            elif number == 4:
                filename = _scalar(field)
            elif number == 5:
                start_line = _signed(_scalar(field))
        return (
            self.string(name or system_name, "a function name"),
            self.string(filename, "a function's file name"),
            start_line,
        )

    def location(
        self,
        span: tuple[int, int],
        functions: dict[int, tuple[str, str, int]],
        mapping_files: dict[int, int],
    ) -> tuple[Frame, ...]:
        mapping_id = address = 0
        frames: list[Frame] = []
        for field in _fields(self.buf, *span):
            number = field[0]
            if number == 2:
                mapping_id = _scalar(field)
            elif number == 3:
                address = _scalar(field)
            elif number == 4:
                function_id = line = 0
                for sub in _fields(self.buf, *_span(field)):
                    if sub[0] == 1:
                        function_id = _scalar(sub)
                    elif sub[0] == 2:
                        line = _signed(_scalar(sub))
                fn = functions.get(function_id)
                if fn is None:
                    raise _Corrupt(
                        f"a location refers to function {function_id}, which is not defined"
                    )
                name, filename, start_line = fn
                frames.append(Frame(name, filename, line, start_line))
        if not frames:
            # Unsymbolized: all we know is the address and maybe the binary.
            binary = self.string(mapping_files.get(mapping_id, 0), "a mapping's file name")
            frames.append(Frame(f"0x{address:x}", binary))
        return tuple(frames)

    def label(self, start: int, end: int) -> tuple[str, str]:
        key = text = num = unit = 0
        has_num = False
        for field in _fields(self.buf, start, end):
            number = field[0]
            if number == 1:
                key = _scalar(field)
            elif number == 2:
                text = _scalar(field)
            elif number == 3:
                num = _signed(_scalar(field))
                has_num = True
            elif number == 4:
                unit = _scalar(field)
        name = self.string(key, "a label key")
        if text or not has_num:
            return name, self.string(text, "a label value")
        unit_name = self.string(unit, "a label unit")
        return name, f"{num} {unit_name}" if unit_name else str(num)


def decode(data: bytes, *, max_size: int | None = None) -> Profile:
    """Parse gzipped or raw profile.proto bytes; ProfileFormatError if they are not one,
    ProfileTooLarge if they are beyond `max_size` (see the module's doc)."""
    if not data:
        raise ProfileFormatError("not a pprof profile: the data is empty")
    gzipped = data[:2] == _GZIP_MAGIC
    if gzipped:
        raw = _gunzip(data, max_size)
    else:
        raw = bytes(data)
        if max_size is not None and len(raw) > max_size:
            raise ProfileTooLarge(f"larger than {_mib(max_size)}", max_size)
    budget = None if max_size is None else max_size * MEMORY_PER_BYTE
    try:
        return _Decoder(raw, budget).decode()
    except _OverBudget as e:
        assert max_size is not None
        raise ProfileTooLarge(
            f"decoding {e} would take more than {_mib(budget or 0)} of memory"
            f" ({MEMORY_PER_BYTE} x the {_mib(max_size)} limit)",
            max_size,
        ) from None
    except _Corrupt as e:
        if gzipped:
            raise ProfileFormatError(f"corrupt pprof profile: {e}") from None
        raise ProfileFormatError(
            f"not a pprof profile (neither gzip nor valid profile.proto): {e}"
        ) from None
    except (IndexError, KeyError, ValueError, OverflowError) as e:
        # Not expected to happen; promised anyway, so callers need one except clause.
        raise ProfileFormatError(f"corrupt pprof profile: {type(e).__name__}: {e}") from None


_INFLATE_STEP = 16 << 20
"""Bytes decompressed per step: the cap is checked between steps, so a bomb costs at most
the cap plus one step (zlib's own output buffer, grown in one go, would double it)."""


def _gunzip(data: bytes, max_size: int | None) -> bytes:
    """Every gzip member of `data`, decompressed; stops as soon as `max_size` is passed."""
    out: list[bytes] = []
    total = 0
    rest = data
    while True:  # one gzip member per turn
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
        pending = rest
        while not inflater.eof:
            try:
                chunk = inflater.decompress(pending, _INFLATE_STEP)
            except zlib.error as e:
                raise ProfileFormatError(
                    f"corrupt pprof profile: the gzip stream is damaged ({e})"
                ) from None
            total += len(chunk)
            out.append(chunk)
            if max_size is not None and total > max_size:
                raise ProfileTooLarge(f"larger than {_mib(max_size)} once decompressed", max_size)
            pending = inflater.unconsumed_tail
            if not chunk and not pending:  # input used up before the member's end
                break
        if not inflater.eof:
            raise ProfileFormatError("corrupt pprof profile: the gzip stream is truncated")
        rest = inflater.unused_data
        if not rest.strip(b"\0"):  # gzip allows trailing zeros after the last member
            break
        if rest[:2] != _GZIP_MAGIC:
            raise ProfileFormatError(
                "corrupt pprof profile: the gzip stream is damaged (data after its end)"
            )
    raw = b"".join(out)
    if not raw:
        raise ProfileFormatError("corrupt pprof profile: the gzip stream is empty")
    return raw


def _mib(size: int) -> str:
    return f"{size >> 20} MiB" if size % (1 << 20) == 0 else f"{size:,} bytes"


def read_pprof(path: Path | str, *, max_size: int | None = None) -> Profile:
    """Read a pprof file; ProfileFormatError (naming the file) if it is not a valid one,
    ProfileTooLarge if it is larger than `max_size` bytes (compressed or not)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if max_size is not None and size > max_size:
            raise ProfileTooLarge(f"{path}: larger than {_mib(max_size)}", max_size)
        data = f.read() if max_size is None else f.read(max_size + 1)
    try:
        return decode(data, max_size=max_size)
    except ProfileTooLarge as e:
        raise ProfileTooLarge(f"{path}: {e}", e.limit) from None
    except ProfileFormatError as e:
        raise ProfileFormatError(f"{path}: {e}") from None
