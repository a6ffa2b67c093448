"""Making a model: the contrastive training loop (`loop`), the query adapter's pairs and fit
(`adapter`), degraded query sets made with real encoders (`queries`), the calibration fit
(`calibrate`), and the development corpus's lists (`devcorpus`)."""
