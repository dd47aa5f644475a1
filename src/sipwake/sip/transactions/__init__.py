"""sip/transactions"""
