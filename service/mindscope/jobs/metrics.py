"""Jobs in /metrics: jobs by state, items finished and failed, item rows still queued, bytes on disk."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mindscope.jobs.service import JobService


class JobsCollector(Collector):
    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        by_state = GaugeMetricFamily("mindscope_jobs", "jobs by state", labels=["state"])
        for state, count in self.jobs.store.counts().items():
            by_state.add_metric([state], count)
        done = CounterMetricFamily(
            "mindscope_job_items", "job items finished since the server started, by outcome", labels=["outcome"]
        )
        done.add_metric(["succeeded"], self.jobs.items_done)
        done.add_metric(["failed"], self.jobs.items_failed)
        queued = GaugeMetricFamily("mindscope_job_items_queued", "items of queued and running jobs still to run")
        queued.add_metric([], self.jobs.store.queued_items())
        stored = GaugeMetricFamily("mindscope_jobs_bytes", "bytes the jobs' inputs and results take on disk")
        stored.add_metric([], self.jobs.store.total_bytes())
        yield from (by_state, done, queued, stored)
