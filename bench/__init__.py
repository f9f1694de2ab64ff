"""`kaon bench`: a load generator for any OpenAI-compatible endpoint.

One step per module: ``workloads`` (what to send) → ``arrivals`` (when to send it) →
``client`` (send, stream, record) → ``metrics`` (summary maths) and ``server_metrics``
(the server's own counters around a run) → ``report`` (JSON and plots); ``baseline`` starts
a bare vLLM server for comparison and ``cli`` wires them into the ``kaon bench`` command.
"""
