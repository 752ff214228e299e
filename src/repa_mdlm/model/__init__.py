"""The student and its maths: the MDLM schedule, SUBS and N-ELBO, and REPA's projection and loss."""
