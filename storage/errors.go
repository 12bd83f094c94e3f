package storage

// markedError is an error whose message is written for a person and which
// matches both a sentinel (ErrPermanent, ErrNotExist, ErrLocked) and the
// underlying cause with errors.Is and errors.As.
type markedError struct {
	msg   string
	kind  error
	cause error
}

func (e *markedError) Error() string { return e.msg }

func (e *markedError) Unwrap() []error {
	errs := make([]error, 0, 2)
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// mark returns an error with message msg that wraps kind and cause.
func mark(kind, cause error, msg string) error {
	return &markedError{msg: msg, kind: kind, cause: cause}
}
