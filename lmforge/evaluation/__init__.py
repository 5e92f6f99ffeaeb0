"""Downstream metrics: accuracy/F1, entity F1 (seqeval), SQuAD EM/F1, BLEU and ROUGE."""
