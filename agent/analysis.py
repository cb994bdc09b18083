"""One in-process replay for the commands that study captures (assets, report, policy learn/diff).

They all need the same thing: read the files, run the pipeline with their own consumers (and
optionally a policy and sinks), and get back the pipeline, its counters and what went wrong while
reading. Capture errors become ``AnalysisError`` with the one-line reason the CLI prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.capture.base import CaptureError
from agent.pipeline import FlowConsumer, Pipeline, PipelineConfig, RunStats, Sink
from agent.records import CaptureProblem, Frame, SourceInfo

if TYPE_CHECKING:
    from agent.capture.files import ReplaySource
    from agent.policy.engine import CompiledPolicy


class AnalysisError(Exception):
    """The captures could not be opened at all (bad path, not a capture)."""


@dataclass(slots=True)
class Analysis:
    pipeline: Pipeline
    stats: RunStats
    sources: list[SourceInfo]
    problems: list[CaptureProblem]
    file_packets: list[int]  # packets read per file, in source order


FrameTap = Callable[[Iterator[Frame]], Iterator[Frame]]


def analyse(
    captures: Sequence[str],
    consumers: Iterable[FlowConsumer] = (),
    policy: CompiledPolicy | None = None,
    sinks: Iterable[Sink] = (),
    config: PipelineConfig | None = None,
    tap: FrameTap | None = None,
    on_pipeline: Callable[[Pipeline], None] | None = None,
) -> Analysis:
    """Replay ``captures`` (merged in time order) through a pipeline with ``consumers``.

    ``tap`` wraps the frame iterator (to see every frame on its way in); ``on_pipeline`` is called
    with the pipeline before the run, e.g. to hand a consumer the pipeline's event emitter.
    """
    from agent.capture.files import ReplaySource

    try:
        source: ReplaySource = ReplaySource(captures)
    except CaptureError as e:
        raise AnalysisError(str(e)) from None
    try:
        pipeline = Pipeline(config or PipelineConfig(), sinks=sinks, consumers=consumers, policy=policy)
        if on_pipeline is not None:
            on_pipeline(pipeline)
        frames = tap(iter(source)) if tap is not None else None
        stats = pipeline.run(source, frames)
        return Analysis(
            pipeline, stats, list(source.sources), source.problems, [f.packets for f in source.files]
        )
    finally:
        source.close()
