"""`kaon sim`: a discrete-event simulator of a kaon cluster that drives the real routing
policy objects (``kaon.routing``) against modelled vLLM replicas.

One step per module: ``cost_model`` (step times and capacity, per hardware + model) →
``kv_cache`` (the prefix cache's radix tree) → ``replica`` (continuous batching over it) →
``workload`` (requests as block-hash chains, arrival times) → ``interfaces`` (config,
clock, results) → ``engine`` (the event loop: router, replicas, stats staleness, the
autoscaling hook driving ``kaon.autoscaling`` policies) → ``reference`` (simulator-only
routing policies: oracle, SGLang's and Ray's rules) → ``scenarios`` (named policies,
saturation search, summaries) → ``reference_autoscaling`` (Ray Serve's default autoscaling
policy, simulator-only) → ``autoscaling`` (autoscaled runs and their step-response figures)
→ ``cli``; ``calibrate`` fits a cost model from bench results.
"""
