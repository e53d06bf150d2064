// Rust token trees on the host side, for watt macros: a lexer from source text to token trees
// (what rustc hands a proc macro) and a printer back to text in proc-macro2's format. Spans are
// not tracked: every token has the one call-site span.

export type Delimiter = 0 | 1 | 2 | 3; // parenthesis, brace, bracket, none (watt's numbering)

export type TokenTree =
  | { kind: 'group'; delimiter: Delimiter; stream: TokenTree[] }
  | { kind: 'ident'; text: string }
  | { kind: 'punct'; ch: string; joint: boolean }
  | { kind: 'literal'; text: string };

export class LexError extends Error {
  override readonly name = 'LexError';
}

const PUNCT = new Set('~!@#$%^&*-=+|;:,<.>/?\''.split(''));
const OPEN: Record<string, Delimiter> = { '(': 0, '{': 1, '[': 2 };
const CLOSE: Record<string, Delimiter> = { ')': 0, '}': 1, ']': 2 };
const CLOSE_CHAR = [')', '}', ']', ''];
const XID_START = /[\p{XID_Start}_]/u;
const XID_CONTINUE = /\p{XID_Continue}/u;
const WHITESPACE = /[\t\n\v\f\r \u0085\u200e\u200f\u2028\u2029]/;

function isIdentStart(c: string | undefined): boolean {
  return c !== undefined && XID_START.test(c);
}
function isIdentContinue(c: string | undefined): boolean {
  return c !== undefined && XID_CONTINUE.test(c);
}

/** `text` as a Rust string literal, escaped as proc-macro2's Literal::string does. */
export function stringLiteral(text: string): string {
  let out = '"';
  for (const c of text) {
    if (c === '"') out += '\\"';
    else if (c === '\\') out += '\\\\';
    else if (c === '\n') out += '\\n';
    else if (c === '\r') out += '\\r';
    else if (c === '\t') out += '\\t';
    else if (c === '\0') out += '\\0';
    else if (/[\p{Cc}]/u.test(c)) out += `\\u{${c.codePointAt(0)!.toString(16)}}`;
    else out += c;
  }
  return out + '"';
}

class Lexer {
  private pos = 0;
  private readonly chars: string[];
  constructor(text: string) {
    this.chars = [...text];
  }

  private peek(n = 0): string | undefined {
    return this.chars[this.pos + n];
  }

  private fail(message: string): never {
    const consumed = this.chars.slice(0, this.pos).join('');
    const line = consumed.split('\n').length;
    const column = consumed.length - consumed.lastIndexOf('\n');
    throw new LexError(`${message} at line ${line}, column ${column}`);
  }

  lexStream(close: Delimiter | undefined): TokenTree[] {
    const out: TokenTree[] = [];
    for (;;) {
      this.skipTrivia(out);
      const c = this.peek();
      if (c === undefined) {
        if (close !== undefined) this.fail(`unclosed delimiter: expected "${CLOSE_CHAR[close]}"`);
        return out;
      }
      if (c in CLOSE) {
        if (close !== CLOSE[c]) this.fail(`unexpected closing delimiter "${c}"`);
        this.pos++;
        return out;
      }
      if (c in OPEN) {
        this.pos++;
        const delimiter = OPEN[c]!;
        out.push({ kind: 'group', delimiter, stream: this.lexStream(delimiter) });
        continue;
      }
      out.push(...this.lexToken());
    }
  }

  /** Whitespace and comments; doc comments become `#[doc = "..."]` (`#![doc...]` for inner ones). */
  private skipTrivia(out: TokenTree[]): void {
    for (;;) {
      const c = this.peek();
      if (c !== undefined && WHITESPACE.test(c)) {
        this.pos++;
        continue;
      }
      if (c === '/' && this.peek(1) === '/') {
        let end = this.pos;
        while (end < this.chars.length && this.chars[end] !== '\n') end++;
        const body = this.chars.slice(this.pos + 2, end).join('');
        this.pos = end;
        if (body.startsWith('/') && !body.startsWith('//')) this.doc(out, body.slice(1), false);
        else if (body.startsWith('!')) this.doc(out, body.slice(1), true);
        continue;
      }
      if (c === '/' && this.peek(1) === '*') {
        const start = this.pos;
        this.pos += 2;
        let depth = 1;
        while (depth > 0) {
          const d = this.peek();
          if (d === undefined) this.fail('unterminated block comment');
          if (d === '/' && this.peek(1) === '*') {
            depth++;
            this.pos += 2;
          } else if (d === '*' && this.peek(1) === '/') {
            depth--;
            this.pos += 2;
          } else {
            this.pos++;
          }
        }
        const body = this.chars.slice(start + 2, this.pos - 2).join('');
        if (body.startsWith('*') && !body.startsWith('**') && body !== '*') this.doc(out, body.slice(1), false);
        else if (body.startsWith('!')) this.doc(out, body.slice(1), true);
        continue;
      }
      return;
    }
  }

  private doc(out: TokenTree[], text: string, inner: boolean): void {
    out.push({ kind: 'punct', ch: '#', joint: false });
    if (inner) out.push({ kind: 'punct', ch: '!', joint: false });
    out.push({
      kind: 'group',
      delimiter: 2,
      stream: [
        { kind: 'ident', text: 'doc' },
        { kind: 'punct', ch: '=', joint: false },
        { kind: 'literal', text: stringLiteral(text) },
      ],
    });
  }

  private lexToken(): TokenTree[] {
    const c = this.peek()!;
    const start = this.pos;
    // Prefixed literals: b"..", b'..', br"..", r"..", r#".."#, c"..", cr"..".
    if (c === 'b' || c === 'r' || c === 'c') {
      const lit = this.tryPrefixedLiteral();
      if (lit) return [lit];
    }
    if (c === 'r' && this.peek(1) === '#' && isIdentStart(this.peek(2))) {
      this.pos += 2;
      const name = this.identText();
      return [{ kind: 'ident', text: `r#${name}` }];
    }
    if (isIdentStart(c)) {
      const name = this.identText();
      return [{ kind: 'ident', text: name }];
    }
    if (c >= '0' && c <= '9') return [{ kind: 'literal', text: this.number() }];
    if (c === '"') {
      this.quoted('"');
      return [{ kind: 'literal', text: this.chars.slice(start, this.pos).join('') + this.suffix() }];
    }
    if (c === "'") {
      // A char literal, or a lifetime / label ('a, 'static).
      const next = this.peek(1);
      if (next === '\\' || (this.peek(2) === "'" && next !== undefined)) {
        this.quoted("'");
        return [{ kind: 'literal', text: this.chars.slice(start, this.pos).join('') + this.suffix() }];
      }
      if (isIdentStart(next)) {
        this.pos++;
        return [{ kind: 'punct', ch: "'", joint: true }, { kind: 'ident', text: this.identText() }];
      }
      this.fail('invalid character literal');
    }
    if (PUNCT.has(c)) {
      this.pos++;
      const next = this.peek();
      const joint = next !== undefined && PUNCT.has(next) && next !== "'";
      return [{ kind: 'punct', ch: c, joint }];
    }
    this.fail(`unexpected character ${JSON.stringify(c)}`);
  }

  private identText(): string {
    const start = this.pos;
    this.pos++;
    while (isIdentContinue(this.peek())) this.pos++;
    return this.chars.slice(start, this.pos).join('');
  }

  private suffix(): string {
    return isIdentStart(this.peek()) ? this.identText() : '';
  }

  private quoted(q: string): void {
    this.pos++; // opening quote
    for (;;) {
      const d = this.peek();
      if (d === undefined) this.fail(`unterminated ${q === '"' ? 'string' : 'character'} literal`);
      this.pos++;
      if (d === '\\') {
        if (this.peek() === undefined) this.fail('unterminated escape');
        this.pos++;
      } else if (d === q) {
        return;
      }
    }
  }

  private tryPrefixedLiteral(): TokenTree | undefined {
    const start = this.pos;
    let i = this.pos;
    const c = this.chars[i]!;
    if (c === 'b' || c === 'c') {
      i++;
      if (this.chars[i] === '"' || (c === 'b' && this.chars[i] === "'")) {
        this.pos = i;
        this.quoted(this.chars[i]!);
        return { kind: 'literal', text: this.chars.slice(start, this.pos).join('') + this.suffix() };
      }
      if (this.chars[i] !== 'r') return undefined;
    }
    if (this.chars[i] !== 'r') return undefined;
    i++;
    let hashes = 0;
    while (this.chars[i] === '#') {
      hashes++;
      i++;
    }
    if (this.chars[i] !== '"') return undefined;
    i++;
    for (;;) {
      if (i >= this.chars.length) {
        this.pos = start;
        this.fail('unterminated raw string literal');
      }
      if (this.chars[i] === '"') {
        let n = 0;
        while (n < hashes && this.chars[i + 1 + n] === '#') n++;
        if (n === hashes) {
          this.pos = i + 1 + hashes;
          return { kind: 'literal', text: this.chars.slice(start, this.pos).join('') + this.suffix() };
        }
      }
      i++;
    }
  }

  private number(): string {
    const start = this.pos;
    const digits = (re: RegExp) => {
      while (this.peek() !== undefined && re.test(this.peek()!)) this.pos++;
    };
    if (this.peek() === '0' && (this.peek(1) === 'x' || this.peek(1) === 'o' || this.peek(1) === 'b')) {
      this.pos += 2;
      digits(/[0-9a-fA-F_]/);
      return this.chars.slice(start, this.pos).join('') + this.suffix();
    }
    digits(/[0-9_]/);
    // A fraction: '.' not followed by '.', an identifier or another '.' (1..2, 1.foo()).
    if (this.peek() === '.' && this.peek(1) !== '.' && !isIdentStart(this.peek(1))) {
      this.pos++;
      digits(/[0-9_]/);
    }
    if ((this.peek() === 'e' || this.peek() === 'E') && /[0-9+_-]/.test(this.peek(1) ?? '')) {
      const save = this.pos;
      this.pos++;
      if (this.peek() === '+' || this.peek() === '-') this.pos++;
      if (!/[0-9_]/.test(this.peek() ?? '')) this.pos = save;
      else digits(/[0-9_]/);
    }
    return this.chars.slice(start, this.pos).join('') + this.suffix();
  }
}

/** Lex Rust source text into token trees; throws LexError naming the place. */
export function lex(text: string): TokenTree[] {
  return new Lexer(text).lexStream(undefined);
}

const OPEN_TEXT = ['(', '{ ', '[', ''];
const CLOSE_TEXT = [')', '}', ']', ''];

/** Print token trees the way proc-macro2 prints a TokenStream. */
export function print(stream: readonly TokenTree[]): string {
  const parts: string[] = [];
  printInto(stream, parts);
  return parts.join('');
}

function printInto(stream: readonly TokenTree[], out: string[]): void {
  let joint = false;
  stream.forEach((tt, i) => {
    if (i !== 0 && !joint) out.push(' ');
    joint = false;
    switch (tt.kind) {
      case 'group':
        out.push(OPEN_TEXT[tt.delimiter]!);
        printInto(tt.stream, out);
        if (tt.delimiter === 1 && tt.stream.length > 0) out.push(' ');
        out.push(CLOSE_TEXT[tt.delimiter]!);
        break;
      case 'punct':
        out.push(tt.ch);
        joint = tt.joint;
        break;
      default:
        out.push(tt.text);
    }
  });
}
