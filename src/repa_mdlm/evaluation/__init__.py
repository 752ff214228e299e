"""Evaluation: ELBO perplexity, the sampler, generative quality and its judge, lm-eval."""
