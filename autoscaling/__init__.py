"""Queue-depth autoscaling: pure policies over cluster snapshots (no Ray).

``snapshot`` holds what a policy sees and returns (``ClusterSnapshot``, ``Decision``, the
``AutoscalingPolicy`` protocol); ``policy`` is kaon's queue-depth policy; ``figures`` turns a
replica timeline into step-response figures. Ray Serve's controller runs the policy through
``kaon.deployments.autoscaling_policy``; the simulator drives the same object.
"""
