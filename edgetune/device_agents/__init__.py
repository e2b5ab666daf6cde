"""device_agents"""
