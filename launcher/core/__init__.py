"""The core every layer stands on: errors, the spec, techniques and data formats, model references,
job records and outputs, the data pre-flight, the console. Imports nothing else of ftlaunch."""
