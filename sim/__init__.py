"""`kaon sim`: a discrete-event simulator of a kaon cluster that drives the real routing
policy objects (``kaon.routing``) against modelled vLLM replicas.

One step per module: ``cost_model`` (step times and capacity, per hardware + model) →
``kv_cache`` (the prefix cache's radix tree) → ``replica`` (continuous batching over it) →
``workload`` (requests as block-hash chains, arrival times) → ``interfaces`` (config,
clock, results, the autoscaling hook's types) → ``engine`` (the event loop:
router, replicas, stats staleness, autoscaling hook) → ``reference`` (simulator-only
policies: oracle, SGLang's and Ray's rules) → ``scenarios`` (named policies, saturation
search, summaries) → ``cli``; ``calibrate`` fits a cost model from bench results.
"""
