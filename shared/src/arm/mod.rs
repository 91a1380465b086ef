//! Azure Resource Manager client. (Filled in by the control-plane work.)
