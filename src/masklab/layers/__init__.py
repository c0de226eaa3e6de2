"""Keras 3 layers of masklab (registered serializable under the ``masklab`` package name)."""
