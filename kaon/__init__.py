"""kaon: an LLM serving cluster on Ray Serve and vLLM."""
