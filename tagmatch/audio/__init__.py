"""Audio in: decoding any file to mono samples (`decode`), the log-mel front end (`features`),
and the degradations that training applies to make a query out of a clean crop (`augment`)."""
