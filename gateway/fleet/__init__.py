"""The Triton pods the gateway forwards to: who they are (discovery, kubernetes_discovery), their health
and load (backends, health), and the HTTP/2 connections to them (upstreams)."""
