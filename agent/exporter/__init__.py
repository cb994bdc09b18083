"""Prometheus exporter: an HTTP endpoint publishing the run's counters at scrape time.

``Exporter`` ties the parts together for the commands: it builds a private ``CollectorRegistry``
(nothing global, so tests and several runs in one process never see each other's metrics) with the
agent's collector and the process collector, hands the pipeline its accounting consumers, and
serves the registry once the run is set up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector

from agent.exporter.accounting import OperationAccounting, PolicyEventCounter, TrafficAccounting
from agent.exporter.collector import AgentCollector, RunView
from agent.exporter.server import DEFAULT_LISTEN_ADDRESS, ExporterError, MetricsServer
from agent.exporter.webconfig import WebConfigError, load_web_config

if TYPE_CHECKING:
    from agent.pipeline import FlowConsumer, Pipeline
    from agent.policy.reload import PolicyReloader

__all__ = ["DEFAULT_LISTEN_ADDRESS", "Exporter", "ExporterError"]


class Exporter:
    """The metrics endpoint of one run (``run`` or ``replay``)."""

    def __init__(
        self,
        listen_address: str,
        telemetry_path: str,
        web_config_file: str | None,
        mode: str,
        policy_path: str | None,
    ) -> None:
        try:
            config = load_web_config(web_config_file)
        except WebConfigError as e:
            raise ExporterError(f"--web.config.file {e}") from None
        self.view = RunView(mode=mode, policy_path=policy_path)
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = AgentCollector(self.view)
        self.registry.register(self.collector)
        # CPU, memory, open files and start time of the sensor process: the basics of "is it healthy".
        ProcessCollector(registry=self.registry)
        self.traffic = TrafficAccounting()
        self.operations = OperationAccounting()
        self.view.extra_collectors.append(self.operations)
        self.server = MetricsServer(listen_address, telemetry_path, config, self.registry, self.view.ready)

    def consumers(self) -> list[FlowConsumer]:
        """The flow consumers to hand the pipeline (they count what the metrics publish)."""
        return [self.traffic]

    def attach(self, pipeline: Pipeline, reloader: PolicyReloader | None) -> None:
        """Point the collector at the run, before it starts."""
        self.traffic.active_flows = pipeline.flows.flows
        decoders = pipeline.decoders
        decoders.interest = self.operations.wrap(decoders.interest)
        decoders.listening = True
        if pipeline.policy is not None:
            self.view.policy_events = PolicyEventCounter(pipeline.policy)
        self.view.reloader = reloader
        self.view.pipeline = pipeline

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        host = self.server.host or "localhost"
        if ":" in host:
            host = f"[{host}]"
        return f"{self.server.scheme}://{host}:{self.server.port}{self.server.telemetry_path}"
