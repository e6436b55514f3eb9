package ir

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Parse reads an LLMIR module. It accepts what Print writes and what
// upstream mlir-opt prints back, in its custom or generic
// (--mlir-print-op-generic) form, with or without debug locations. Errors
// are *Error values positioned at file:line:col.
func Parse(file string, src []byte) (m *Module, err error) {
	p := &parser{file: file, src: src}
	p.lines = append(p.lines, 0)
	for i, c := range src {
		if c == '\n' {
			p.lines = append(p.lines, i+1)
		}
	}
	defer func() {
		// The parser reports errors by panicking with *Error and nothing else;
		// any other panic is a bug and propagates.
		if r := recover(); r != nil {
			e, ok := r.(*Error)
			if !ok {
				panic(r)
			}
			m, err = nil, e
		}
	}()
	return p.parseTop(), nil
}

// ParseString is Parse for in-memory text.
func ParseString(file, src string) (*Module, error) { return Parse(file, []byte(src)) }

type parser struct {
	file  string
	src   []byte
	pos   int
	lines []int // offset of the start of every line
}

const maxNesting = 64

func (p *parser) locAt(off int) Loc {
	line := sort.Search(len(p.lines), func(i int) bool { return p.lines[i] > off }) - 1
	return Loc{File: p.file, Line: line + 1, Col: off - p.lines[line] + 1}
}

func (p *parser) loc() Loc { return p.locAt(p.pos) }

func (p *parser) failAt(off int, format string, args ...any) {
	panic(&Error{Loc: p.locAt(off), Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) fail(format string, args ...any) { p.failAt(p.pos, format, args...) }

func (p *parser) skipSpace() {
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			p.pos++
		case c == '/' && p.pos+1 < len(p.src) && p.src[p.pos+1] == '/':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

// mark skips blanks and returns the offset of the next token, for errors.
func (p *parser) mark() int { p.skipSpace(); return p.pos }

func (p *parser) eof() bool { p.skipSpace(); return p.pos >= len(p.src) }

// peek reports whether the next token starts with s.
func (p *parser) peek(s string) bool {
	p.skipSpace()
	return strings.HasPrefix(string(p.src[p.pos:min(len(p.src), p.pos+len(s))]), s)
}

// accept consumes s if it comes next.
func (p *parser) accept(s string) bool {
	if p.peek(s) {
		p.pos += len(s)
		return true
	}
	return false
}

// acceptWord consumes the keyword w if it comes next as a whole word.
func (p *parser) acceptWord(w string) bool {
	if !p.peek(w) {
		return false
	}
	end := p.pos + len(w)
	if end < len(p.src) && isIDChar(p.src[end]) {
		return false
	}
	p.pos = end
	return true
}

func (p *parser) expect(s string) {
	if !p.accept(s) {
		p.fail("expected %q, found %s", s, p.describe())
	}
}

// describe names what comes next, for error messages.
func (p *parser) describe() string {
	p.skipSpace()
	if p.pos >= len(p.src) {
		return "end of input"
	}
	end := p.pos
	for end < len(p.src) && end-p.pos < 20 && p.src[end] != '\n' && (isIDChar(p.src[end]) || end == p.pos) {
		end++
	}
	return strconv.Quote(string(p.src[p.pos:end]))
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isIDChar(c byte) bool {
	return isLetter(c) || isDigit(c) || c == '_' || c == '$' || c == '.' || c == '-'
}

// bareID reads [A-Za-z_][A-Za-z0-9_$.]*; "" if none comes next.
func (p *parser) bareID() string {
	p.skipSpace()
	start := p.pos
	if p.pos < len(p.src) && (isLetter(p.src[p.pos]) || p.src[p.pos] == '_') {
		p.pos++
		for p.pos < len(p.src) {
			c := p.src[p.pos]
			if !(isLetter(c) || isDigit(c) || c == '_' || c == '$' || c == '.') {
				break
			}
			p.pos++
		}
	}
	return string(p.src[start:p.pos])
}

// suffixID reads the name after a sigil (%, @, ^, #, !): a bare id or digits.
func (p *parser) suffixID(sigil byte) string {
	start := p.pos
	if !p.accept(string(sigil)) {
		p.fail("expected %q, found %s", string(sigil), p.describe())
	}
	if p.pos < len(p.src) && p.src[p.pos] == '"' && sigil == '@' {
		return p.stringLit()
	}
	s := p.pos
	for p.pos < len(p.src) && (isLetter(p.src[p.pos]) || isDigit(p.src[p.pos]) || strings.IndexByte("_$.-", p.src[p.pos]) >= 0) {
		p.pos++
	}
	if p.pos == s {
		p.failAt(start, "expected a name after %q", string(sigil))
	}
	return string(p.src[s:p.pos])
}

func (p *parser) stringLit() string {
	p.skipSpace()
	start := p.pos
	if p.pos >= len(p.src) || p.src[p.pos] != '"' {
		p.fail("expected a string, found %s", p.describe())
	}
	p.pos++
	var b strings.Builder
	for {
		if p.pos >= len(p.src) || p.src[p.pos] == '\n' {
			p.failAt(start, "unterminated string")
		}
		c := p.src[p.pos]
		p.pos++
		switch c {
		case '"':
			return b.String()
		case '\\':
			if p.pos >= len(p.src) {
				p.failAt(start, "unterminated string")
			}
			e := p.src[p.pos]
			switch {
			case e == '"' || e == '\\':
				b.WriteByte(e)
				p.pos++
			case e == 'n':
				b.WriteByte('\n')
				p.pos++
			case e == 't':
				b.WriteByte('\t')
				p.pos++
			case p.pos+1 < len(p.src) && isHex(e) && isHex(p.src[p.pos+1]):
				v, _ := strconv.ParseUint(string(p.src[p.pos:p.pos+2]), 16, 8)
				b.WriteByte(byte(v))
				p.pos += 2
			default:
				p.failAt(p.pos-1, "unknown escape \\%c in string", e)
			}
		default:
			b.WriteByte(c)
		}
	}
}

func isHex(c byte) bool { return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// number reads an integer or float literal; isFloat says which.
func (p *parser) number() (text string, isFloat bool) {
	p.skipSpace()
	start := p.pos
	if p.pos < len(p.src) && (p.src[p.pos] == '-' || p.src[p.pos] == '+') {
		p.pos++
	}
	if strings.HasPrefix(string(p.src[p.pos:min(len(p.src), p.pos+2)]), "0x") {
		p.pos += 2
		for p.pos < len(p.src) && isHex(p.src[p.pos]) {
			p.pos++
		}
		return string(p.src[start:p.pos]), false
	}
	digits := p.pos
	for p.pos < len(p.src) && isDigit(p.src[p.pos]) {
		p.pos++
	}
	if p.pos == digits {
		p.failAt(start, "expected a number, found %s", p.describe())
	}
	if p.pos < len(p.src) && p.src[p.pos] == '.' {
		isFloat = true
		p.pos++
		for p.pos < len(p.src) && isDigit(p.src[p.pos]) {
			p.pos++
		}
		if p.pos < len(p.src) && (p.src[p.pos] == 'e' || p.src[p.pos] == 'E') {
			p.pos++
			if p.pos < len(p.src) && (p.src[p.pos] == '-' || p.src[p.pos] == '+') {
				p.pos++
			}
			e := p.pos
			for p.pos < len(p.src) && isDigit(p.src[p.pos]) {
				p.pos++
			}
			if p.pos == e {
				p.failAt(start, "malformed float exponent")
			}
		}
	}
	return string(p.src[start:p.pos]), isFloat
}

func (p *parser) intLit() int64 {
	start := p.pos
	text, isFloat := p.number()
	if isFloat {
		p.failAt(start, "expected an integer, found %s", text)
	}
	v, err := strconv.ParseInt(text, 0, 64)
	if err != nil {
		p.failAt(start, "integer %s out of range", text)
	}
	return v
}

// --- types ---

func (p *parser) parseType() Type {
	p.skipSpace()
	start := p.pos
	switch {
	case p.peek("("):
		return p.parseFuncType()
	case p.peek("!"):
		name := p.suffixID('!')
		if name != "llmir.paged_kv" {
			p.failAt(start, "unknown type !%s", name)
		}
		return p.parsePagedKV(start)
	}
	id := p.bareID()
	if id == "tensor" {
		return p.parseTensorBody(start)
	}
	if t, ok := ParseElemType(id); ok {
		return t
	}
	if id == "" {
		p.failAt(start, "expected a type, found %s", p.describe())
	}
	p.failAt(start, "unknown or unsupported type %q", id)
	return nil
}

func (p *parser) parseTensorBody(start int) TensorType {
	p.expect("<")
	var t TensorType
	for {
		p.skipSpace()
		if p.pos >= len(p.src) {
			p.failAt(start, "unterminated tensor type")
		}
		c := p.src[p.pos]
		switch {
		case c == '?':
			p.pos++
			t.Shape = append(t.Shape, Dim{Size: Dynamic})
		case isDigit(c):
			n := p.pos
			for p.pos < len(p.src) && isDigit(p.src[p.pos]) {
				p.pos++
			}
			v, err := strconv.ParseInt(string(p.src[n:p.pos]), 10, 64)
			if err != nil || v > 1<<40 {
				p.failAt(n, "tensor dimension %s too large", p.src[n:p.pos])
			}
			t.Shape = append(t.Shape, S(v))
		case c == '*':
			p.fail("unranked tensors are not supported")
		default:
			id := p.bareID()
			e, ok := ParseElemType(id)
			if !ok {
				p.failAt(p.pos-len(id), "unknown element type %q in tensor type", id)
			}
			t.Elem = e
			if p.accept(",") {
				p.parseDimNames(&t)
			}
			p.expect(">")
			return t
		}
		if p.pos >= len(p.src) || p.src[p.pos] != 'x' {
			p.fail("expected 'x' after a tensor dimension")
		}
		p.pos++
	}
}

func (p *parser) parseDimNames(t *TensorType) {
	start := p.pos
	if p.suffixID('#') != "llmir.dims" {
		p.failAt(start, "unsupported tensor encoding: only #llmir.dims<[...]> is known")
	}
	p.expect("<")
	p.expect("[")
	var names []string
	for !p.accept("]") {
		if len(names) > 0 {
			p.expect(",")
		}
		names = append(names, p.stringLit())
	}
	p.expect(">")
	i := 0
	for j, d := range t.Shape {
		if d.IsDynamic() {
			if i >= len(names) {
				break
			}
			t.Shape[j].Sym = names[i]
			i++
		}
	}
	if i != len(names) || dynCount(*t) != len(names) {
		p.failAt(start, "#llmir.dims names %d dims but the tensor has %d dynamic dims", len(names), dynCount(*t))
	}
}

func dynCount(t TensorType) int {
	n := 0
	for _, d := range t.Shape {
		if d.IsDynamic() {
			n++
		}
	}
	return n
}

func (p *parser) parsePagedKV(start int) PagedKVType {
	p.expect("<")
	var t PagedKVType
	seen := map[string]bool{}
	for !p.accept(">") {
		if len(seen) > 0 {
			p.expect(",")
		}
		kpos := p.mark()
		key := p.bareID()
		p.expect("=")
		if seen[key] {
			p.failAt(kpos, "!llmir.paged_kv: %s given twice", key)
		}
		seen[key] = true
		switch key {
		case "elem":
			epos := p.mark()
			e, ok := ParseElemType(p.bareID())
			if !ok {
				p.failAt(epos, "!llmir.paged_kv: unknown element type")
			}
			t.Elem = e
		case "block_size", "kv_heads", "head_dim", "layers":
			vpos := p.mark()
			v := p.intLit()
			if v <= 0 {
				p.failAt(vpos, "!llmir.paged_kv: %s must be positive", key)
			}
			switch key {
			case "block_size":
				t.BlockSize = v
			case "kv_heads":
				t.KVHeads = v
			case "head_dim":
				t.HeadDim = v
			case "layers":
				t.Layers = v
			}
		default:
			p.failAt(kpos, "!llmir.paged_kv: unknown parameter %q", key)
		}
	}
	for _, k := range []string{"block_size", "kv_heads", "head_dim", "elem", "layers"} {
		if !seen[k] {
			p.failAt(start, "!llmir.paged_kv: missing %s", k)
		}
	}
	return t
}

func (p *parser) parseTypeList() []Type {
	p.expect("(")
	var ts []Type
	for !p.accept(")") {
		if len(ts) > 0 {
			p.expect(",")
		}
		ts = append(ts, p.parseType())
	}
	return ts
}

func (p *parser) parseFuncType() FuncType {
	in := p.parseTypeList()
	p.expect("->")
	if p.peek("(") {
		return FuncType{Inputs: in, Results: p.parseTypeList()}
	}
	return FuncType{Inputs: in, Results: []Type{p.parseType()}}
}

// --- attributes ---

func (p *parser) parseAttrDict(depth int) Attrs {
	p.expect("{")
	var as Attrs
	for !p.accept("}") {
		if len(as) > 0 {
			p.expect(",")
		}
		npos := p.mark()
		var name string
		if p.peek(`"`) {
			name = p.stringLit()
		} else {
			name = p.bareID()
		}
		if name == "" {
			p.failAt(npos, "expected an attribute name, found %s", p.describe())
		}
		if _, dup := as.Get(name); dup {
			p.failAt(npos, "attribute %q given twice", name)
		}
		var v Attr = UnitAttr{}
		if p.accept("=") {
			v = p.parseAttr(depth + 1)
		}
		as.Set(name, v)
	}
	return as
}

func (p *parser) parseAttr(depth int) Attr {
	if depth > maxNesting {
		p.fail("attributes nested too deeply")
	}
	p.skipSpace()
	start := p.pos
	if p.pos >= len(p.src) {
		p.fail("expected an attribute value, found end of input")
	}
	c := p.src[p.pos]
	switch {
	case c == '"':
		return StrAttr(p.stringLit())
	case c == '[':
		p.pos++
		var a ArrayAttr
		for !p.accept("]") {
			if len(a) > 0 {
				p.expect(",")
			}
			a = append(a, p.parseAttr(depth+1))
		}
		return a
	case c == '{':
		return DictAttr(p.parseAttrDict(depth))
	case isDigit(c) || c == '-' || c == '+':
		return p.parseNumberAttr(start)
	}
	switch {
	case p.acceptWord("true"):
		return BoolAttr(true)
	case p.acceptWord("false"):
		return BoolAttr(false)
	case p.acceptWord("unit"):
		return UnitAttr{}
	}
	if c == '#' {
		p.fail("unsupported attribute %s", p.describe())
	}
	return TypeAttr{T: p.parseType()}
}

func (p *parser) parseNumberAttr(start int) Attr {
	text, isFloat := p.number()
	isHexLit := strings.HasPrefix(strings.TrimLeft(text, "+-"), "0x")
	var t ElemType
	if p.accept(":") {
		tpos := p.mark()
		e, ok := ParseElemType(p.bareID())
		if !ok {
			p.failAt(tpos, "expected an integer or float type after ':'")
		}
		t = e
	}
	if t == "" {
		t = I64
		if isFloat {
			t = F64
		}
	}
	if t.IsFloat() {
		var v float64
		if isHexLit {
			bits, err := strconv.ParseUint(strings.TrimPrefix(text, "0x"), 16, 64)
			if err != nil || bits>>uint(t.Bits()) != 0 {
				p.failAt(start, "hexadecimal float %s does not fit %s", text, t)
			}
			v = floatFromBits(bits, t)
		} else {
			var err error
			v, err = strconv.ParseFloat(text, 64)
			if err != nil {
				p.failAt(start, "bad float %s", text)
			}
		}
		return FloatAttr{V: RoundFloat(v, t), T: t}
	}
	if isFloat {
		p.failAt(start, "float %s given integer type %s", text, t)
	}
	v, err := strconv.ParseInt(text, 0, 64)
	if err != nil {
		p.failAt(start, "integer %s out of range", text)
	}
	// Signless integers accept both the signed and the unsigned range.
	if b := t.Bits(); t != Index && b < 64 && (v < -(1<<(b-1)) || v >= 1<<b) {
		p.failAt(start, "integer %s does not fit %s", text, t)
	}
	return IntAttr{V: v, T: t}
}

// --- locations ---

// parseTrailingLoc reads an optional `loc(...)`; a "file":line:col location
// becomes the op's position, any other kind is skipped.
func (p *parser) parseTrailingLoc(def Loc) Loc {
	if !p.acceptWord("loc") {
		return def
	}
	p.expect("(")
	save := p.pos
	if p.peek(`"`) {
		f := p.stringLit()
		if p.accept(":") {
			line := p.intLit()
			p.expect(":")
			col := p.intLit()
			if p.accept(")") {
				return Loc{File: f, Line: int(line), Col: int(col)}
			}
		}
	}
	p.pos = save
	p.skipBalanced(')')
	return def
}

// skipBalanced skips to the close that matches an already consumed opener.
func (p *parser) skipBalanced(close byte) {
	start := p.pos
	stack := []byte{close}
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch c {
		case '"':
			p.stringLit()
			continue
		case '(':
			stack = append(stack, ')')
		case '[':
			stack = append(stack, ']')
		case '{':
			stack = append(stack, '}')
		case '<':
			stack = append(stack, '>')
		case ')', ']', '}', '>':
			if c == '>' && p.pos > 0 && p.src[p.pos-1] == '-' {
				break // the arrow of a function type
			}
			if stack[len(stack)-1] != c {
				p.fail("unbalanced %q", string(c))
			}
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				p.pos++
				return
			}
		}
		p.pos++
	}
	p.failAt(start, "unterminated %q", string(close))
}

// --- ops and structure ---

type scope map[string]*Value

func (p *parser) parseTop() *Module {
	p.skipAliases()
	var m *Module
	if p.peek("module") || p.peek(`"builtin.module"`) {
		m = p.parseModule()
	} else {
		// MLIR wraps top-level functions in an implicit module.
		m = &Module{Loc: p.loc()}
		for !p.eof() && !p.peek("#") {
			m.Funcs = append(m.Funcs, p.parseFuncOp())
		}
	}
	p.skipAliases()
	if !p.eof() {
		p.fail("unexpected %s after the module", p.describe())
	}
	seen := map[string]bool{}
	for _, f := range m.Funcs {
		if seen[f.Name] {
			panic(errorf(f.Loc, "function @%s defined twice", f.Name))
		}
		seen[f.Name] = true
	}
	return m
}

// skipAliases skips `#name = ...` definitions (mlir-opt prints location
// aliases that way with --mlir-print-debuginfo).
func (p *parser) skipAliases() {
	for p.peek("#") {
		p.suffixID('#')
		p.expect("=")
		p.skipSpace()
		if p.acceptWord("loc") {
			p.expect("(")
			p.skipBalanced(')')
			continue
		}
		p.fail("unsupported alias definition")
	}
}

func (p *parser) parseModule() *Module {
	m := &Module{Loc: p.loc()}
	if p.accept(`"builtin.module"`) {
		p.expect("(")
		p.expect(")")
		p.expect("(")
		p.parseModuleRegion(m)
		p.expect(")")
		if p.peek("{") {
			m.Attrs = p.parseAttrDict(0)
		}
		p.expect(":")
		if ft := p.parseFuncType(); len(ft.Inputs)+len(ft.Results) != 0 {
			p.fail("builtin.module has type () -> ()")
		}
	} else {
		p.acceptWord("module")
		if p.peek("@") {
			m.Name = p.suffixID('@')
		}
		if p.acceptWord("attributes") {
			m.Attrs = p.parseAttrDict(0)
		}
		p.parseModuleRegion(m)
	}
	if a, ok := m.Attrs.Get("sym_name"); ok {
		if s, ok := a.(StrAttr); ok {
			m.Name = string(s)
			m.Attrs.Delete("sym_name")
		}
	}
	m.Loc = p.parseTrailingLoc(m.Loc)
	return m
}

func (p *parser) parseModuleRegion(m *Module) {
	p.expect("{")
	if p.peek("^") {
		p.suffixID('^')
		p.expect(":")
	}
	for !p.accept("}") {
		if p.eof() {
			p.failAt(len(p.src), "unterminated module: expected '}'")
		}
		m.Funcs = append(m.Funcs, p.parseFuncOp())
	}
}

func (p *parser) parseFuncOp() *Func {
	start := p.pos
	switch {
	case p.acceptWord("func.func"):
		return p.parseCustomFunc(p.locAt(start))
	case p.accept(`"func.func"`):
		return p.parseGenericFunc(p.locAt(start))
	}
	p.fail("expected func.func, found %s (a module holds only functions)", p.describe())
	return nil
}

func (p *parser) parseCustomFunc(loc Loc) *Func {
	f := &Func{Loc: loc}
	p.acceptWord("private")
	f.Name = p.suffixID('@')
	p.expect("(")
	sc := scope{}
	for !p.accept(")") {
		if len(f.Args) > 0 {
			p.expect(",")
		}
		npos := p.mark()
		name := p.suffixID('%')
		p.expect(":")
		v := f.AddArg(p.parseType())
		if p.peek("{") {
			f.ArgAttrs[len(f.ArgAttrs)-1] = p.parseAttrDict(0)
		}
		p.parseTrailingLoc(Loc{})
		if _, dup := sc[name]; dup {
			p.failAt(npos, "argument %%%s defined twice", name)
		}
		sc[name] = v
	}
	if p.accept("->") {
		if p.peek("(") {
			f.Results = p.parseTypeList()
		} else {
			f.Results = []Type{p.parseType()}
		}
	}
	if p.acceptWord("attributes") {
		f.Attrs = p.parseAttrDict(0)
	}
	p.expect("{")
	if p.peek("^") {
		p.parseBlockLabel(f, sc)
	}
	p.parseBody(f, sc)
	f.Loc = p.parseTrailingLoc(f.Loc)
	return f
}

func (p *parser) parseBlockLabel(f *Func, sc scope) {
	p.suffixID('^')
	if p.accept("(") {
		for i := 0; !p.accept(")"); i++ {
			if i > 0 {
				p.expect(",")
			}
			npos := p.mark()
			name := p.suffixID('%')
			p.expect(":")
			t := p.parseType()
			p.parseTrailingLoc(Loc{})
			if len(sc) == i && len(f.Args) == i {
				f.AddArg(t)
			}
			if i >= len(f.Args) || !Equal(f.Args[i].Type, t) {
				p.failAt(npos, "block argument %%%s does not match the function signature", name)
			}
			if _, dup := sc[name]; dup {
				p.failAt(npos, "argument %%%s defined twice", name)
			}
			sc[name] = f.Args[i]
		}
	}
	p.expect(":")
}

func (p *parser) parseGenericFunc(loc Loc) *Func {
	f := &Func{Loc: loc}
	p.expect("(")
	p.expect(")")
	var props Attrs
	if p.accept("<{") {
		p.pos-- // let the dictionary parser see its '{'
		props = p.parseAttrDict(0)
		p.expect(">")
	}
	p.expect("(")
	p.expect("{")
	sc := scope{}
	if p.peek("^") {
		p.parseBlockLabel(f, sc)
	}
	p.parseBody(f, sc)
	p.expect(")")
	var attrs Attrs
	if p.peek("{") {
		attrs = p.parseAttrDict(0)
	}
	for _, a := range props {
		attrs.Set(a.Name, a.Value)
	}
	p.expect(":")
	p.parseFuncType()
	f.Loc = p.parseTrailingLoc(f.Loc)

	name, ok := attrs.Get("sym_name")
	if s, isStr := name.(StrAttr); !ok || !isStr {
		panic(errorf(loc, "func.func: missing sym_name"))
	} else {
		f.Name = string(s)
	}
	ftA, ok := attrs.Get("function_type")
	ft, isFT := func() (FuncType, bool) {
		if ta, ok := ftA.(TypeAttr); ok {
			ft, ok := ta.T.(FuncType)
			return ft, ok
		}
		return FuncType{}, false
	}()
	if !ok || !isFT {
		panic(errorf(loc, "func.func @%s: missing function_type", f.Name))
	}
	if len(ft.Inputs) != len(f.Args) {
		panic(errorf(loc, "func.func @%s: function_type has %d inputs but the body %d arguments", f.Name, len(ft.Inputs), len(f.Args)))
	}
	for i, t := range ft.Inputs {
		if !Equal(t, f.Args[i].Type) {
			panic(errorf(loc, "func.func @%s: argument %d is %s in function_type but %s in the body", f.Name, i, t, f.Args[i].Type))
		}
	}
	f.Results = ft.Results
	if aa, ok := attrs.Get("arg_attrs"); ok {
		arr, isArr := aa.(ArrayAttr)
		if !isArr || len(arr) != len(f.Args) {
			panic(errorf(loc, "func.func @%s: arg_attrs must list one dictionary per argument", f.Name))
		}
		for i, d := range arr {
			dict, isDict := d.(DictAttr)
			if !isDict {
				panic(errorf(loc, "func.func @%s: arg_attrs[%d] is not a dictionary", f.Name, i))
			}
			if len(dict) > 0 {
				f.ArgAttrs[i] = Attrs(dict)
			}
		}
	}
	for _, k := range []string{"sym_name", "function_type", "arg_attrs", "sym_visibility"} {
		attrs.Delete(k)
	}
	f.Attrs = attrs
	return f
}

// parseBody reads ops up to the closing '}' of a function body.
func (p *parser) parseBody(f *Func, sc scope) {
	for {
		if p.accept("}") {
			break
		}
		if p.eof() {
			p.failAt(len(p.src), "unterminated function @%s: expected '}'", f.Name)
		}
		if n := len(f.Body); n > 0 && f.Body[n-1].Name == ReturnName {
			p.fail("op after func.return in @%s", f.Name)
		}
		f.Body = append(f.Body, p.parseOp(sc))
	}
	if n := len(f.Body); n == 0 || f.Body[n-1].Name != ReturnName {
		panic(errorf(f.Loc, "function @%s does not end with func.return", f.Name))
	}
}

type resultName struct {
	name  string
	count int
	off   int
}

func (p *parser) parseOp(sc scope) *Op {
	start := p.pos
	var results []resultName
	if p.peek("%") {
		for {
			off := p.pos
			p.skipSpace()
			off = p.pos
			name := p.suffixID('%')
			n := 1
			if p.accept(":") {
				n = int(p.intLit())
				if n < 1 || n > 1024 {
					p.failAt(off, "bad result count %d", n)
				}
			}
			results = append(results, resultName{name, n, off})
			if !p.accept(",") {
				break
			}
		}
		p.expect("=")
	}
	p.skipSpace()
	opLoc := p.loc()
	var op *Op
	switch {
	case p.acceptWord("return") || p.acceptWord("func.return"):
		op = &Op{Name: ReturnName, Loc: opLoc}
		if !p.peek("}") && !p.peek("loc") {
			op.Operands = p.parseOperands(sc)
			p.expect(":")
			for i := range op.Operands {
				if i > 0 {
					p.expect(",")
				}
				tpos := p.mark()
				if t := p.parseType(); !Equal(t, op.Operands[i].Type) {
					p.failAt(tpos, "return operand %d has type %s, not %s", i, op.Operands[i].Type, t)
				}
			}
		}
		op.Loc = p.parseTrailingLoc(op.Loc)
	case p.peek(`"`):
		op = p.parseGenericOp(sc, opLoc)
	default:
		p.fail("expected an op, found %s", p.describe())
	}
	total := 0
	for _, r := range results {
		total += r.count
	}
	if total != len(op.Results) {
		p.failAt(start, "%s produces %d results but %d are named", op.Name, len(op.Results), total)
	}
	i := 0
	for _, r := range results {
		if _, dup := sc[r.name]; dup {
			p.failAt(r.off, "value %%%s defined twice", r.name)
		}
		if r.count == 1 {
			sc[r.name] = op.Results[i]
		} else {
			for j := 0; j < r.count; j++ {
				sc[fmt.Sprintf("%s#%d", r.name, j)] = op.Results[i+j]
			}
		}
		i += r.count
	}
	return op
}

func (p *parser) parseOperands(sc scope) []*Value {
	var vs []*Value
	for {
		p.skipSpace()
		off := p.pos
		name := p.suffixID('%')
		if p.pos < len(p.src) && p.src[p.pos] == '#' {
			p.pos++
			name += fmt.Sprintf("#%d", p.intLit())
		}
		v, ok := sc[name]
		if !ok {
			p.failAt(off, "use of undefined value %%%s", name)
		}
		vs = append(vs, v)
		if !p.accept(",") {
			return vs
		}
	}
}

func (p *parser) parseGenericOp(sc scope, loc Loc) *Op {
	npos := p.mark()
	op := &Op{Name: p.stringLit(), Loc: loc}
	if op.Name == ReturnName {
		op.Name = ReturnName
	} else if _, ok := LookupOp(op.Name); !ok {
		p.failAt(npos, "unknown op %q", op.Name)
	}
	p.expect("(")
	if !p.accept(")") {
		op.Operands = p.parseOperands(sc)
		p.expect(")")
	}
	if p.peek("[") {
		p.fail("%s: successors are not supported", op.Name)
	}
	if p.accept("<{") {
		p.pos--
		for _, a := range p.parseAttrDict(0) {
			op.Attrs.Set(a.Name, a.Value)
		}
		p.expect(">")
	}
	if p.peek("(") {
		p.fail("%s: regions are not supported", op.Name)
	}
	if p.peek("{") {
		for _, a := range p.parseAttrDict(0) {
			op.Attrs.Set(a.Name, a.Value)
		}
	}
	p.expect(":")
	tpos := p.mark()
	ft := p.parseFuncType()
	if len(ft.Inputs) != len(op.Operands) {
		p.failAt(tpos, "%s has %d operands but its type lists %d", op.Name, len(op.Operands), len(ft.Inputs))
	}
	for i, t := range ft.Inputs {
		if !Equal(t, op.Operands[i].Type) {
			p.failAt(tpos, "%s operand #%d is %s but its type says %s", op.Name, i, op.Operands[i].Type, t)
		}
	}
	for i, t := range ft.Results {
		if _, isFn := t.(FuncType); isFn {
			p.failAt(tpos, "%s: a result cannot be a function type", op.Name)
		}
		op.Results = append(op.Results, &Value{Type: t, Def: op, Index: i})
	}
	if op.Name == ReturnName && len(op.Results) != 0 {
		p.failAt(tpos, "func.return has no results")
	}
	op.Loc = p.parseTrailingLoc(op.Loc)
	return op
}
