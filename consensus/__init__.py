"""PBFT (Castro & Liskov, OSDI 1999) as a pure state machine: events in, actions out."""
