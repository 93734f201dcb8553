package schedule

// Check says whether ApplySettings would accept the settings, without applying them, so a
// configuration reload can check every component before any of them switches.
func (st Settings) Check() error { return st.validate() }
