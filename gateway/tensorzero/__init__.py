"""TensorZero's own API on the gateway: functions and variants, the native /inference, /feedback
and /batch_inference endpoints, and their ClickHouse rows."""
