package model

import (
	"strings"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// Visibility maps the Google Calendar visibility vocabulary ("default",
// "public", "private", "confidential"), which postpress passes through as
// well, to the model's enum; anything else is UNSPECIFIED.
func Visibility(s string) calsyncv1.Visibility {
	switch strings.ToLower(s) {
	case "default":
		return calsyncv1.Visibility_VISIBILITY_DEFAULT
	case "public":
		return calsyncv1.Visibility_VISIBILITY_PUBLIC
	case "private":
		return calsyncv1.Visibility_VISIBILITY_PRIVATE
	case "confidential":
		return calsyncv1.Visibility_VISIBILITY_CONFIDENTIAL
	}
	return calsyncv1.Visibility_VISIBILITY_UNSPECIFIED
}

// Transparency maps "opaque" and "transparent" to the model's enum;
// anything else is UNSPECIFIED.
func Transparency(s string) calsyncv1.Transparency {
	switch strings.ToLower(s) {
	case "opaque":
		return calsyncv1.Transparency_TRANSPARENCY_OPAQUE
	case "transparent":
		return calsyncv1.Transparency_TRANSPARENCY_TRANSPARENT
	}
	return calsyncv1.Transparency_TRANSPARENCY_UNSPECIFIED
}
