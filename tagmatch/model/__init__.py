"""The fingerprint model: the Siamese encoder's modules and frozen config (`encoder`), a model
file's save/load and the `LoadedModel` that embeds windows (`modelfile`, `embedders`), the
confidence calibration (`calibration`) and the query adapter applied to query vectors (`adapter`)."""
