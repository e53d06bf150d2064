use describe_derive::{trace, Describe};
use std::cell::RefCell;

thread_local! {
    pub static TRACE: RefCell<Vec<&'static str>> = RefCell::new(Vec::new());
}

#[derive(Describe)]
pub struct Point<T> {
    pub x: T,
    pub y: T,
    pub label: String,
}

#[derive(Describe)]
pub enum Shape {
    Circle,
    Square,
}

#[trace("area")]
fn area(side: u32) -> u32 {
    side * side
}

#[trace]
fn double(n: u32) -> u32 {
    n * 2
}

fn main() {
    println!("{}", Point::<i32>::describe());
    println!("{:?}", Point::<i32>::FIELD_NAMES);
    println!("{}", Shape::describe());
    let p = Point { x: 1, y: 2, label: "p".to_string() };
    println!("{} {} {}", p.x, p.y, p.label);
    println!("{}", double(area(3)));
    TRACE.with(|t| println!("trace: {:?}", t.borrow()));
}
