"""``qenex-wallet``: the command-line wallet (keystore, balances, transfers, tokens, AMM pools).

``node.wallet.amounts`` converts between human amounts (``"10.5"``) and integer base units without
floats or Decimal; ``node.wallet.cli`` is the command line (``main(argv)``), a thin layer over
``node.rpc.client``.
"""
