"""The course's own plumbing, on top of everything else: loading GPT-2 with its tokenizer (or the
course checkpoint offline), the environment check, the workshop copies, plotting.
"""
