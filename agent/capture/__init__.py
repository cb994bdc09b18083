"""Capture sources: pcap/pcapng files (optionally gzip-compressed) and live AF_PACKET capture.

Every source yields ``agent.records.Frame`` tuples and never raises on bad data once opened:
a file that goes bad half way is read as far as it is valid and the problem is recorded
(``CaptureProblem``) for the pipeline to report after flushing its outputs.
"""
