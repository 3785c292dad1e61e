"""`cairn demo`: the credit-risk golden path (data, training, registry, deployment, inference)."""
