"""Offline evaluation: target models, prompt sets, compliance estimates, reports, the judge's
held-out figures and the statistics they use."""
