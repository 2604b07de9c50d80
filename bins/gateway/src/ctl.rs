//! `tether-gateway ctl`: a command-line client of the control plane.
